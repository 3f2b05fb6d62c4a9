"""Opening the buffer file: corrupt files are moved aside, the schema is created or migrated."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.buffer import schema
from gatewayd.buffer.database import CorruptDatabase, Database, Statement
from gatewayd.errors import StorageError

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")


def corrupt_name(path: Path, now: datetime) -> Path:
    """``<name>.corrupt-<UTC YYYYmmddTHHMMSSZ>`` next to ``path``."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return path.with_name(f"{path.name}.corrupt-{stamp}")


def move_aside(path: Path, now: datetime) -> Path:
    """Rename ``path`` and its side files to the corrupt name; returns the new path.

    Never overwrites: a name already taken gets ``.1``, ``.2``, ... appended.
    Blocking (renames); raises OSError.
    """
    base = target = corrupt_name(path, now)
    n = 0
    while any(Path(f"{target}{suffix}").exists() for suffix in ("", *SIDE_FILES)):
        n += 1
        target = base.with_name(f"{base.name}.{n}")
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.rename(side, f"{target}{suffix}")
    os.rename(path, target)
    return target


async def open_database(path: Path) -> tuple[Database, Path | None]:
    """Open (or create) the buffer at ``path``.

    Returns the database and, when the file was corrupt, where it was moved.
    Raises StorageError when the file cannot be opened, is locked by another
    process, or holds a schema this version does not know.
    """
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    moved: Path | None = None
    try:
        db = await Database.connect(path)
    except CorruptDatabase as err:
        try:
            moved = await asyncio.to_thread(move_aside, path, datetime.now(UTC))
        except OSError as move_err:
            raise StorageError(f"buffer database {path} is corrupt and cannot be moved aside: "
                               f"{move_err}", reason="corrupt") from move_err
        log.warning("buffer: %s; moved it to %s and started a new buffer", err, moved)
        db = await Database.connect(path)
    async with db.lock:
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
    return db, moved


async def migrate(db: Database) -> None:
    """Create the schema in a new file or upgrade an older one.

    Raises StorageError (reason ``schema``) for a file of a newer version or
    a database that is not a gatewayd buffer.
    """
    version = int(await db.scalar(schema.USER_VERSION))
    tables = {row[0] for row in await db.fetchall(schema.LIST_TABLES)}
    if version == 0 and tables:
        raise StorageError(f"{db.path} is an SQLite database but not a gatewayd buffer "
                           f"(tables: {', '.join(sorted(tables))})", reason="schema")
    if version > schema.SCHEMA_VERSION:
        raise StorageError(f"buffer {db.path} has schema version {version}; this gatewayd "
                           f"knows up to {schema.SCHEMA_VERSION}", reason="schema")
    if version == 0:
        steps = list(schema.CREATE_TABLES)
    else:
        steps = [sql for v in range(version, schema.SCHEMA_VERSION) for sql in schema.MIGRATIONS[v]]
    if version == schema.SCHEMA_VERSION:
        return
    statements = [Statement(sql) for sql in steps]
    statements.append(Statement(f"PRAGMA user_version = {schema.SCHEMA_VERSION}"))
    await db.write(statements, on_commit=lambda counts: None)
    if version:
        log.info("buffer: migrated %s from schema version %d to %d", db.path, version,
                 schema.SCHEMA_VERSION)
