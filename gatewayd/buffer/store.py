"""The durable buffer: readings in, per-uplink batches out, within a disk budget.

``Buffer`` owns the pending queue and the commit loop (``run``); the work is
done by the writer (inserts), the evictor (size), and the uplink cursors
(reads, acks, deletes). See docs/buffer.md for the guarantees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from gatewayd.buffer import schema
from gatewayd.buffer.counters import OVERFLOW, DropCounts, DropReport, FaultLog
from gatewayd.buffer.cursors import Batch, UplinkCursors
from gatewayd.buffer.database import Database, Statement
from gatewayd.buffer.eviction import Evictor, measure
from gatewayd.buffer.pending import AppendTicket, PendingChunk, PendingQueue
from gatewayd.buffer.recovery import open_database
from gatewayd.buffer.series import SeriesCatalog
from gatewayd.buffer.sizing import MIN_MAX_SIZE, size_budget
from gatewayd.buffer.state import BufferState
from gatewayd.buffer.writer import ReadingWriter
from gatewayd.config.schema import BufferConfig
from gatewayd.errors import StorageError
from gatewayd.reading import Reading

log = logging.getLogger(__name__)

# In "batched" durability, committed transactions reach the disk (fsync) at
# the latest this long after they commit: a checkpoint syncs the WAL.
BATCHED_SYNC_INTERVAL = 1.0
# After a failed maintenance step, wait this long before the next try.
MAINTENANCE_RETRY = 1.0
# The buffer never plans to use more of its file system than is free: at most once per
# DISK_CHECK_INTERVAL (before a commit) it measures the free space and, when that is
# less than max_size allows, works to a smaller effective size, leaving DISK_RESERVE
# (at least 64 KiB, or 2 % of the file system) to the rest of the system.
DISK_CHECK_INTERVAL = 1.0
DISK_RESERVE_MIN = 64 * 1024
DISK_RESERVE_FRACTION = 0.02


def disk_room(directory: Path, footprint: int) -> int | None:
    """Bytes the buffer may occupy on the file system of ``directory``: its current
    ``footprint`` plus the free space, less the reserve; None when it cannot be told."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    reserve = max(DISK_RESERVE_MIN, int(st.f_blocks * st.f_frsize * DISK_RESERVE_FRACTION))
    return footprint + st.f_bavail * st.f_frsize - reserve


class Buffer:
    """The durable store between drivers and uplinks (an async context manager).

    ``uplinks`` maps uplink name -> select patterns (fnmatch on
    ``device/point``); ``priorities`` maps device -> priority (missing = 0,
    higher = kept longer when the buffer is full).
    """

    def __init__(self, config: BufferConfig, *, uplinks: Mapping[str, Sequence[str]],
                 priorities: Mapping[str, int] | None = None) -> None:
        self._config = config
        self._state = BufferState(size_budget(config.max_size))
        self._catalog = SeriesCatalog(priorities)
        self._cursors = UplinkCursors(self._catalog, self._state)
        self._cursors.configure(uplinks)
        self._drops = DropCounts()
        self._faults = FaultLog()
        self._evictor = Evictor(self._catalog, self._cursors, self._state, self._drops)
        self._writer = ReadingWriter(self._catalog, self._cursors, self._evictor, self._state,
                                     self._drops, self._faults, self._notify_commit)
        self._pending = PendingQueue(config.max_pending)
        self._overflows = DropReport(log, "buffer: pending queue full, dropped %d oldest "
                                          "readings (%s)")
        self._db: Database | None = None
        self._recovered: Path | None = None
        self._wake = asyncio.Event()  # pending data, a flush, or a config change
        self._data = asyncio.Event()  # replaced at each commit; waiters re-check last_id
        self._first_pending_at: float | None = None
        self._urgent = False  # commit without waiting for the interval
        self._configure_db = False  # durability or size changed: apply to the connection
        self._unsynced_since: float | None = None  # first commit not yet synced (batched)
        self._maintain_after = 0.0  # loop time before which maintenance is not retried
        self._disk_checked_at: float | None = None  # loop time of the last free-space check

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Open, recover or create the file and load the state.

        Raises StorageError when the file cannot be opened or has an unknown schema.
        """
        if self._db is not None:
            return
        db, self._recovered = await open_database(self._config.path)
        try:
            async with db.lock:
                self._state.budget = size_budget(self._effective_max_size(db), db.page_size)
                await db.configure(self._state.budget, self._config.durability)
                await self._load(db)
        except BaseException:
            await db.close()
            raise
        self._db = db
        self._writer.next_id = self._state.last_id + 1
        if self._state.page_count > self._state.budget.max_page_count:
            self._configure_db = True  # shrink in the commit loop
        self._wake.set()
        log.info("buffer: opened %s: %d rows, last id %d%s", self._config.path, self._state.rows,
                 self._state.last_id,
                 f", recovered from corrupt file moved to {self._recovered}"
                 if self._recovered else "")

    async def _load(self, db: Database) -> None:
        """Read the state back (caller holds the lock). Only reads are needed: on a full
        disk the writes (series clean-up, new cursors) fail, are recorded and retried."""
        try:
            await db.write([Statement(schema.DELETE_UNUSED_SERIES)], on_commit=lambda c: None)
        except StorageError as err:
            self._fault("removing unused series", err)
        self._catalog.load(await db.fetchall(schema.SELECT_SERIES))
        max_cursor = await self._cursors.load(db)
        max_row = await db.scalar(schema.MAX_READING_ID)
        self._state.last_id = max(max_cursor, max_row or 0)
        self._state.rows = int(await db.scalar(schema.COUNT_READINGS))
        try:
            await self._cursors.sync(db)
        except StorageError as err:
            self._fault("storing cursors", err)  # retried by the commit loop
        await measure(db, self._state)

    async def close(self) -> None:
        """Commit what is pending, then close. Raises StorageError when closing fails."""
        db = self._db
        if db is None:
            return
        try:
            await self.flush()
        finally:
            self._db = None
            async with db.lock:
                await db.close()
            log.info("buffer: closed %s", self._config.path)

    async def __aenter__(self) -> Buffer:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- ingest ------------------------------------------------------------

    def submit(self, readings: Sequence[Reading]) -> None:
        """Queue readings for the next commit (the driver Sink): never blocks, never raises.

        Call from the event loop thread. When the queue is full the oldest
        pending readings are dropped and counted (reason ``overflow``).
        """
        self._enqueue(list(readings), None)

    async def append(self, readings: Sequence[Reading]) -> None:
        """Queue readings and return once a commit holding all of them succeeded.

        Raises StorageError (``reason`` = why) when any of them was dropped.
        """
        ticket = AppendTicket(asyncio.get_running_loop().create_future())
        self._enqueue(list(readings), ticket)
        await ticket.future

    def _enqueue(self, readings: list[Reading], ticket: AppendTicket | None) -> None:
        was_empty = not self._pending
        dropped = self._pending.put(readings, ticket)
        self._count_overflow(dropped)
        if was_empty and self._pending:
            self._first_pending_at = asyncio.get_running_loop().time()
            self._wake.set()
        if not self._urgent and len(self._pending) >= self._pending.limit // 2:
            self._urgent = True
            self._wake.set()

    # -- commit loop -------------------------------------------------------

    async def run(self) -> None:
        """Commit pending readings, at most once per commit_interval; never returns.

        Also applies config changes, finishes deletes, and (batched
        durability) checkpoints within BATCHED_SYNC_INTERVAL of a commit.
        Restartable: state stays consistent when it is cancelled or fails.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_work(loop)
            if self._commit_due(loop.time()):
                await self._commit_pending()
            await self._maintain()

    async def flush(self) -> None:
        """Commit everything pending now."""
        await self._commit_pending()

    def _commit_due(self, now: float) -> bool:
        if not self._pending:
            return False
        first = self._first_pending_at
        return self._urgent or first is None or now >= first + self._config.commit_interval

    def _next_deadline(self, now: float) -> float | None:
        deadlines = []
        if self._pending:
            deadlines.append(now if self._commit_due(now) else
                             (self._first_pending_at or now) + self._config.commit_interval)
        if self._maintenance_due():
            deadlines.append(max(now, self._maintain_after))
        if self._unsynced_since is not None:
            deadlines.append(self._unsynced_since + BATCHED_SYNC_INTERVAL)
        return min(deadlines, default=None)

    async def _wait_for_work(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._wake.clear()
            deadline = self._next_deadline(loop.time())
            if deadline is not None and deadline <= loop.time():
                return
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            except TimeoutError:
                return

    async def _commit_pending(self) -> None:
        db = self._require_db()
        async with db.lock:
            if self._pending:
                # Before taking the chunks: a cancellation here loses nothing.
                await self._fit_to_disk(db)
            chunks = self._pending.take()
            self._first_pending_at = None
            self._urgent = False
            if chunks:
                await self._writer.commit(db, chunks, self._requeue)

    def _effective_max_size(self, db: Database) -> int:
        """``max_size``, or less when the file system has less room than that."""
        room = disk_room(self._config.path.parent, db.file_bytes())
        if room is None or room >= self._config.max_size:
            return self._config.max_size
        return max(MIN_MAX_SIZE, room)

    async def _fit_to_disk(self, db: Database) -> None:
        """Shrink (or grow back) the working size to what the file system can hold, so the
        buffer evicts its oldest rows instead of filling the disk (caller holds the lock)."""
        now = asyncio.get_running_loop().time()
        if self._disk_checked_at is not None and now < self._disk_checked_at + DISK_CHECK_INTERVAL:
            return
        self._disk_checked_at = now
        current = self._state.budget.max_size
        target = self._effective_max_size(db)  # a statvfs and three stats: microseconds
        # Shrink at once; grow back only by a sixteenth or to max_size (no flapping).
        if target == current or current < target < min(self._config.max_size,
                                                       current + current // 16):
            return
        if target < self._config.max_size:
            log.warning("buffer: the file system has room for %d bytes only: working to that "
                        "instead of max_size %d", target, self._config.max_size)
        else:
            log.info("buffer: the file system has room again: back to max_size %d", target)
        self._state.budget = size_budget(target, db.page_size)
        try:
            await db.configure(self._state.budget, self._config.durability)
            await self._evictor.shrink(db)
        except StorageError as err:
            self._configure_db = True  # retried by maintenance
            self._fault("fitting to the file system", err)

    def _count_overflow(self, dropped: list[Reading]) -> None:
        if dropped:
            self._drops.add_readings(OVERFLOW, dropped)
            self._overflows.add(len(dropped), OVERFLOW)

    def _requeue(self, chunks: list[PendingChunk]) -> None:
        dropped = self._pending.requeue(chunks)
        self._count_overflow(dropped)
        if self._pending and self._first_pending_at is None:
            self._first_pending_at = asyncio.get_running_loop().time()

    def _notify_commit(self) -> None:
        data, self._data = self._data, asyncio.Event()
        data.set()
        if self._config.durability == "batched" and self._unsynced_since is None:
            self._unsynced_since = asyncio.get_running_loop().time()

    def _maintenance_due(self) -> bool:
        db = self._db
        return db is not None and (self._configure_db or db.in_doubt
                                   or self._cursors.needs_sync() or self._cursors.needs_purge())

    async def _maintain(self) -> None:
        """Apply config changes, resynchronise after a doubtful write, finish deletes,
        checkpoint. Storage faults are recorded, and retried on the next cycle."""
        db = self._require_db()
        loop = asyncio.get_running_loop()
        if loop.time() < self._maintain_after:
            return
        try:
            async with db.lock:
                if db.in_doubt:
                    await self._resync(db)
                if self._configure_db:
                    self._configure_db = False
                    await db.configure(self._state.budget, self._config.durability)
                    await self._evictor.shrink(db)
                if self._cursors.needs_sync():
                    await self._cursors.sync(db)
            for up in list(self._cursors.uplinks.values()):
                await self._cursors.purge(db, up)
            since = self._unsynced_since
            if since is not None and loop.time() >= since + BATCHED_SYNC_INTERVAL:
                async with db.lock:
                    await db.checkpoint()
                if self._unsynced_since == since:
                    self._unsynced_since = None
        except StorageError as err:
            self._fault("maintenance", err)
            self._maintain_after = loop.time() + MAINTENANCE_RETRY

    async def _resync(self, db: Database) -> None:
        """Reload counts after a write whose outcome was unknown (caller holds the lock)."""
        self._state.last_id = max(self._state.last_id,
                                  int(await db.scalar(schema.MAX_READING_ID) or 0))
        self._state.rows = int(await db.scalar(schema.COUNT_READINGS))
        await self._cursors.load(db)
        for up in self._cursors.uplinks.values():
            up.recount = True
        await self._cursors.sync(db)
        db.in_doubt = False
        log.info("buffer: resynchronised counts after an interrupted write")

    # -- uplinks -----------------------------------------------------------

    async def read(self, uplink: str, after: int, limit: int) -> Batch:
        """Rows selected by ``uplink`` with id > ``after``, at most ``limit``.

        Raises StorageError (unknown uplink, closed buffer, read failure).
        """
        return await self._cursors.read(self._require_db(), uplink, after, limit)

    async def ack(self, uplink: str, upto: int) -> None:
        """Persist ``upto`` as the cursor of ``uplink`` (never moves back) and delete the
        rows every uplink has passed. Raises StorageError when the cursor was not stored."""
        db = self._require_db()
        await self._cursors.ack(db, uplink, upto)
        try:
            await self._cursors.purge(db, self._cursors.get(uplink))
        except StorageError as err:  # the cursor is stored; deletes resume in the commit loop
            self._fault("deleting acknowledged rows", err)

    def cursor(self, uplink: str) -> int:
        """The persisted acknowledged position of ``uplink``. Raises StorageError if unknown."""
        return self._cursors.get(uplink).cursor

    async def wait_for_data(self, after: int) -> None:
        """Return as soon as a committed row with id > ``after`` exists."""
        while self._state.last_id <= after:
            await self._data.wait()

    def last_id(self) -> int:
        """The highest committed row id."""
        return self._state.last_id

    # -- status and config -------------------------------------------------

    def summary(self) -> tuple[int, int]:
        """(the largest uplink backlog in rows, readings dropped so far), from memory:
        no database round trip, for the one-line systemd status."""
        backlog = max((up.backlog for up in self._cursors.uplinks.values()), default=0)
        return backlog, self._drops.total

    async def stats(self) -> dict[str, Any]:
        """Counters and occupancy, JSON-serialisable (docs/buffer.md lists the fields)."""
        db = self._db
        uplinks: dict[str, dict[str, Any]] = {}
        file_bytes = 0
        if db is not None:
            async with db.lock:
                await measure(db, self._state)
                uplinks = await self._cursors.stats(db)
            file_bytes = await asyncio.to_thread(db.file_bytes)
        else:
            uplinks = {name: {"cursor": up.cursor, "backlog_rows": up.backlog,
                              "oldest_age_s": None}
                       for name, up in sorted(self._cursors.uplinks.items())}
        state = self._state
        used = state.used_pages * state.budget.page_size
        for up in uplinks.values():
            # Rows are not sized one by one: the backlog's share of the pages in use.
            up["backlog_bytes"] = (round(up["backlog_rows"] * used / state.rows)
                                   if state.rows else 0)
        return {
            "path": str(self._config.path),
            "open": db is not None,
            "rows": state.rows,
            "last_id": state.last_id,
            "pending": len(self._pending),
            "used_bytes": used,
            "file_bytes": file_bytes,
            "max_size": self._config.max_size,
            "effective_max_size": state.budget.max_size,
            "wal_reserve_bytes": state.budget.wal_bytes,
            "committed_total": state.committed_total,
            "commits": state.commits,
            "drops": self._drops.as_dict(),
            "drops_total": self._drops.total,
            **self._faults.as_dict(),
            "recovered_corrupt": str(self._recovered) if self._recovered else None,
            "durability": self._config.durability,
            "uplinks": uplinks,
        }

    def reconfigure(self, config: BufferConfig, *, uplinks: Mapping[str, Sequence[str]],
                    priorities: Mapping[str, int] | None = None) -> None:
        """Apply a reloaded config live; a changed path is refused (needs a restart)."""
        if config.path != self._config.path:
            log.warning("buffer: path changed from %s to %s; that needs a restart, keeping %s",
                        self._config.path, config.path, self._config.path)
            config = dataclasses.replace(config, path=self._config.path)
        if (config.max_size, config.durability) != (self._config.max_size,
                                                    self._config.durability):
            self._state.budget = size_budget(config.max_size, self._state.budget.page_size)
            self._configure_db = True
            self._disk_checked_at = None  # measure the file system again at the next commit
        self._config = config
        dropped = self._pending.set_limit(config.max_pending)
        self._count_overflow(dropped)
        self._catalog.set_priorities(priorities or {})
        self._evictor.reset()
        self._cursors.configure(uplinks)
        self._wake.set()

    def _fault(self, doing: str, err: StorageError) -> None:
        if err.reason == "disk_full":
            self._disk_checked_at = None  # measure the file system again at the next commit
        self._faults.record(err.reason, str(err))
        log.warning("buffer: %s failed (%s): %s", doing, err.reason, err)

    def _require_db(self) -> Database:
        if self._db is None:
            raise StorageError(f"buffer {self._config.path} is not open", reason="closed")
        return self._db
