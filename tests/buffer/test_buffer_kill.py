"""kill -9: exactly the committed readings survive, whole transactions only."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from tests.buffer.buffer_support import read_all

CHILD = Path(__file__).with_name("buffer_child.py")


async def _start(path: Path, *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), "write", str(path), *map(str, args),
        stdout=asyncio.subprocess.PIPE)


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        return (await proc.stdout.readline()).decode().strip()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    async with asyncio.timeout(30):
        assert await proc.wait() == -signal.SIGKILL


@pytest.mark.parametrize("durability", ["batched", "every-commit"])
async def test_kill_after_known_commits(make_config: Callable[..., BufferConfig],
                                        durability: str) -> None:
    path = make_config().path
    proc = await _start(path, 1000, 100, 7, durability)
    lines = [await _line(proc) for _ in range(8)]
    assert lines[-2:] == ["committed 7000", "blocked"]
    await _kill(proc)
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        records = await read_all(buf, "all")
        assert buf.last_id() == 7000
    assert [rid for rid, _ in records] == list(range(1, 7001))
    assert [r.value for _, r in records] == [float(i) for i in range(7000)]


async def test_kill_while_writing(make_config: Callable[..., BufferConfig]) -> None:
    path = make_config().path
    proc = await _start(path, 1000, 100_000, 0, "batched")
    reported = 0
    for _ in range(20):
        reported = int((await _line(proc)).split()[1])
    await _kill(proc)  # somewhere in the middle of a later commit
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        records = await read_all(buf, "all")
    n = len(records)
    assert n >= reported == 20_000
    assert n % 1000 == 0  # whole transactions only
    assert [r.value for _, r in records] == [float(i) for i in range(n)]
