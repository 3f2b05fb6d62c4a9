"""A corrupt file at start is moved aside and replaced; foreign files are refused."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatewayd.buffer import Buffer
from gatewayd.buffer.recovery import move_aside
from gatewayd.config.schema import BufferConfig
from gatewayd.errors import StorageError
from tests.buffer.buffer_support import read_all, readings

CORRUPT = re.compile(r"buffer\.sqlite\.corrupt-\d{8}T\d{6}Z")
PAGE = 4096


def _damage(path: Path, offset: int, data: bytes) -> bytes:
    """Overwrite bytes of ``path`` at ``offset``; returns the whole file after."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path.read_bytes()


def _truncate(path: Path, size: int) -> bytes:
    with open(path, "r+b") as f:
        f.truncate(size)
    return path.read_bytes()


def _copy_with_wal(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir()
    for suffix in ("", "-wal"):
        Path(f"{dst_dir / src.name}{suffix}").write_bytes(Path(f"{src}{suffix}").read_bytes())
    return dst_dir / src.name


async def _make_valid(config: BufferConfig, n: int = 20_000) -> None:
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        buf.submit(readings("dev", n))
        await buf.flush()


async def _check_recovered(config: BufferConfig, original: bytes) -> None:
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        stats = await buf.stats()
        moved = Path(stats["recovered_corrupt"])
        assert moved.parent == config.path.parent
        assert CORRUPT.fullmatch(moved.name), moved.name
        # Moved, not rewritten (SQLite may have touched the 100-byte file header).
        assert (await asyncio.to_thread(moved.read_bytes))[100:] == original[100:]
        assert stats["rows"] == 0
        buf.submit(readings("dev", 3))
        await buf.flush()
        assert [r.value for _, r in await read_all(buf, "all")] == [0.0, 1.0, 2.0]
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:  # the new file is sound
        assert (await buf.stats())["recovered_corrupt"] is None
        assert buf.last_id() == 3


async def test_garbage_file_is_moved_aside(make_config: Callable[..., BufferConfig]) -> None:
    config = make_config()
    garbage = os.urandom(3 * 4096 + 17)
    config.path.write_bytes(garbage)
    await _check_recovered(config, garbage)


async def test_old_wal_never_reaches_the_new_database(
        make_config: Callable[..., BufferConfig], tmp_path: Path) -> None:
    config = make_config()
    await _make_valid(config)  # closed: everything is in the database file
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        buf.submit(readings("dev", 100, start=20_000))
        await buf.flush()
        # A snapshot of the files while open: the last commit is in the WAL.
        copy = _copy_with_wal(config.path, tmp_path / "copy")
    config = make_config(path=copy)
    # The header of an old b-tree page (not in the WAL).
    damaged = _damage(config.path, 9 * PAGE, b"\xff" * 12)
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        stats = await buf.stats()
        assert stats["rows"] == 0 and buf.last_id() == 0  # nothing of the old WAL applied
        # SQLite folds the WAL into the corrupt file when it closes it; the
        # damage stays, and whatever side file is left moved with it.
        moved = Path(stats["recovered_corrupt"])
        now = await asyncio.to_thread(moved.read_bytes)
        assert now[9 * PAGE:9 * PAGE + 12] == damaged[9 * PAGE:9 * PAGE + 12]
        names = sorted(p.name for p in copy.parent.iterdir())
        assert all(n.startswith(moved.name) for n in names if n.startswith("buffer.sqlite.")), names


def test_move_aside_takes_side_files_and_never_overwrites(tmp_path: Path) -> None:
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    path = tmp_path / "buffer.sqlite"
    for round_ in range(2):
        path.write_bytes(b"db%d" % round_)
        Path(f"{path}-wal").write_bytes(b"wal%d" % round_)
        Path(f"{path}-shm").write_bytes(b"shm%d" % round_)
        moved = move_aside(path, now)
        assert moved.name == ("buffer.sqlite.corrupt-20240506T070809Z" + ("", ".1")[round_])
        assert moved.read_bytes() == b"db%d" % round_
        assert Path(f"{moved}-wal").read_bytes() == b"wal%d" % round_
        assert Path(f"{moved}-shm").read_bytes() == b"shm%d" % round_
    assert not any(p.name in ("buffer.sqlite", "buffer.sqlite-wal") for p in tmp_path.iterdir())


async def test_valid_file_truncated_mid_page_is_moved_aside(
        make_config: Callable[..., BufferConfig]) -> None:
    config = make_config()
    await _make_valid(config)
    size = config.path.stat().st_size
    truncated = _truncate(config.path, size // 2 + 1000)  # not on a page boundary
    await _check_recovered(config, truncated)


async def test_damaged_page_is_caught_by_quick_check(make_config: Callable[..., BufferConfig]
                                                     ) -> None:
    config = make_config()
    await _make_valid(config)
    # The header of a b-tree page; the file header stays readable.
    damaged = _damage(config.path, 9 * PAGE, b"\xff" * 12)
    await _check_recovered(config, damaged)


async def test_foreign_database_is_refused_not_moved(make_config: Callable[..., BufferConfig]
                                                     ) -> None:
    config = make_config()
    conn = sqlite3.connect(config.path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError) as err:
        await Buffer(config, uplinks={}).open()
    assert err.value.reason == "schema"
    assert [p.name for p in config.path.parent.iterdir()] == ["buffer.sqlite"]


async def test_newer_schema_is_refused(make_config: Callable[..., BufferConfig]) -> None:
    config = make_config()
    await _make_valid(config, 1)
    conn = sqlite3.connect(config.path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError) as err:
        await Buffer(config, uplinks={}).open()
    assert err.value.reason == "schema"


async def test_second_process_is_refused_while_open(make_config: Callable[..., BufferConfig]
                                                    ) -> None:
    config = make_config()
    async with Buffer(config, uplinks={}) as buf:
        buf.submit(readings("dev", 1))
        await buf.flush()
        with pytest.raises(StorageError) as err:
            await Buffer(config, uplinks={}).open()
        assert err.value.reason == "io_error"
        assert "locked" in str(err.value)
