"""The buffer's one SQLite connection: the only module that talks to aiosqlite.

Every use of the connection happens under ``Database.lock``: a transaction
spans several awaits, and a read slipped in between them would see rows
that may still be rolled back. Errors from SQLite are converted here into
``StorageError`` with a reason (``disk_full``, ``io_error``, ``invalid``).

A transaction interrupted by cancellation is settled before the
cancellation propagates: the statements already queued on the connection's
thread finish, an open transaction is rolled back, and when COMMIT had
already been sent a probe query tells whether it went through. The caller's
``on_commit`` runs exactly when the transaction committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from gatewayd.buffer import schema
from gatewayd.buffer.counters import DISK_FULL, INVALID, IO_ERROR
from gatewayd.buffer.sizing import SizeBudget
from gatewayd.errors import StorageError

log = logging.getLogger(__name__)

SYNCHRONOUS = {"batched": "NORMAL", "every-commit": "FULL"}


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Any = ()
    many: bool = False


@dataclass(frozen=True)
class Probe:
    """A query returning one truthy value when the transaction it checks committed."""

    sql: str
    params: Sequence[Any] = ()


OnCommit = Callable[[list[int] | None], None]  # row counts per statement, None when unknown


def error_reason(err: BaseException) -> str:
    """The drop/fault reason for an error raised by sqlite3."""
    if isinstance(err, sqlite3.Error):
        code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return DISK_FULL
        if isinstance(err, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return INVALID
        return IO_ERROR
    return INVALID  # a value the sqlite3 module could not bind


def is_corruption(err: sqlite3.Error) -> bool:
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def storage_error(err: BaseException, doing: str) -> StorageError:
    return StorageError(f"buffer database: {doing}: {err}", reason=error_reason(err))


class CorruptDatabase(StorageError):
    """The database file is damaged or is not a database at all."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"buffer database {path} is corrupt: {detail}", reason="corrupt")


class Database:
    """An open buffer database; build with ``connect``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.lock = asyncio.Lock()
        self.page_size = 4096
        self._unsettled = False  # an interrupted transaction may still be open
        self.in_doubt = False  # an interrupted write left memory possibly out of step

    @classmethod
    async def connect(cls, path: Path) -> Database:
        """Open ``path`` (creating it) in exclusive WAL mode and check its integrity.

        Raises CorruptDatabase when the file is damaged or not a database,
        StorageError for any other failure.
        """
        try:
            # Another process holding the file is refused after a short wait.
            conn = await aiosqlite.connect(path, isolation_level=None, timeout=0.5)
        except sqlite3.Error as err:
            raise storage_error(err, f"cannot open {path}") from err
        db = cls(conn, path)
        try:
            await db.execute_pragma(schema.LOCKING)
            if await db.scalar("PRAGMA page_count") == 0:
                for pragma in schema.NEW_FILE_PRAGMAS:
                    await db.execute_pragma(pragma)
            mode = await db.scalar("PRAGMA journal_mode = WAL")
            if mode != "wal":
                raise StorageError(f"buffer database {path}: cannot use WAL mode (got {mode!r})",
                                   reason=IO_ERROR)
            check = [row[0] for row in await db.fetchall("PRAGMA quick_check")]
            if check != ["ok"]:
                raise CorruptDatabase(path, "quick_check: " + "; ".join(map(str, check))[:300])
            db.page_size = int(await db.scalar("PRAGMA page_size"))
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        try:
            await self._conn.close()
        except sqlite3.Error as err:
            raise storage_error(err, "close") from err

    async def configure(self, budget: SizeBudget, durability: str) -> None:
        """Apply the size limits and durability (per connection; not stored in the file)."""
        await self.execute_pragma(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
        await self.execute_pragma(f"PRAGMA cache_size = -{budget.cache_kib}")
        await self.execute_pragma(f"PRAGMA journal_size_limit = {budget.wal_bytes}")
        await self.execute_pragma(f"PRAGMA wal_autocheckpoint = {budget.autocheckpoint_frames}")
        await self.execute_pragma(f"PRAGMA max_page_count = {budget.max_page_count}")
        await self.execute_pragma("PRAGMA mmap_size = 0")
        await self.execute_pragma("PRAGMA temp_store = MEMORY")

    async def execute_pragma(self, sql: str) -> None:
        await self.fetchall(sql)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            rows = await self._conn.execute_fetchall(sql, params)
        except sqlite3.DatabaseError as err:
            if is_corruption(err):
                raise CorruptDatabase(self.path, str(err)) from err
            raise storage_error(err, sql.split(" (")[0][:60]) from err
        except sqlite3.Error as err:
            raise storage_error(err, sql.split(" (")[0][:60]) from err
        return [tuple(row) for row in rows]

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        rows = await self.fetchall(sql, params)
        return rows[0][0] if rows else None

    async def page_usage(self) -> tuple[int, int]:
        """``(page_count, freelist_count)`` of the database file."""
        rows = await self.fetchall(schema.PAGE_USAGE)
        return int(rows[0][0]), int(rows[0][1])

    async def checkpoint(self, mode: str = "PASSIVE") -> None:
        await self.execute_pragma(f"PRAGMA wal_checkpoint({mode})")

    def file_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL (blocking: two stat calls)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
        return total

    async def vacuum_pages(self, pages: int) -> None:
        """Give up to ``pages`` free pages back to the file system (incremental vacuum,
        one transaction). The caller holds ``lock``. Raises StorageError."""
        if self._unsettled:
            await self._settle(commit_sent=False, probe=None)
        self._unsettled = True
        try:
            # executescript steps the pragma to completion (execute frees one page only).
            await self._conn.executescript(
                f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(pages)}); COMMIT;")
        except sqlite3.Error as err:
            await self._settle(commit_sent=False, probe=None)
            raise storage_error(err, "incremental vacuum") from err
        self._unsettled = False

    async def write(self, statements: Sequence[Statement], *, on_commit: OnCommit,
                    probe: Probe | None = None) -> None:
        """Run ``statements`` in one transaction; ``on_commit`` runs when it committed.

        The caller holds ``lock``. Raises StorageError (the transaction rolled
        back). On cancellation the transaction is settled first (module doc).
        """
        if self._unsettled:
            await self._settle(commit_sent=False, probe=None)
        self._unsettled = True
        counts: list[int] = []
        commit_sent = False
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            for st in statements:
                run = self._conn.executemany if st.many else self._conn.execute
                async with run(st.sql, st.params) as cursor:
                    counts.append(cursor.rowcount)
            commit_sent = True
            await self._conn.execute("COMMIT")
        except asyncio.CancelledError:
            if await self._settle(commit_sent=commit_sent, probe=probe):
                on_commit(None)
            raise
        except (sqlite3.Error, ValueError, OverflowError) as err:
            # ValueError includes UnicodeEncodeError from binding a text value.
            await self._settle(commit_sent=False, probe=None)
            raise storage_error(err, "write") from err
        self._unsettled = False
        on_commit(counts)

    async def _settle(self, *, commit_sent: bool, probe: Probe | None) -> bool:
        """Finish an interrupted transaction; True when it turned out committed."""
        committed = False
        try:
            await self._conn.execute_fetchall("SELECT 1")  # runs after every queued statement
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")
            elif commit_sent:
                if probe is None:
                    self.in_doubt = True
                else:
                    committed = bool(await self.scalar(probe.sql, probe.params))
            self._unsettled = False
        except sqlite3.Error as err:
            log.error("buffer: cannot settle an interrupted transaction: %s", err)
            self.in_doubt = True
        except asyncio.CancelledError:
            self.in_doubt = True
            raise
        return committed
