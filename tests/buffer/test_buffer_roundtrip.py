"""Values, batching, waiting and appending against a real SQLite file."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.errors import StorageError
from gatewayd.reading import Reading
from tests.buffer.buffer_support import T0, read_all, readings, running

VALUES: list[object] = [
    0.0, -0.0, 1.5, -2.25e-308, 5e-324, 1.7976931348623157e308, math.inf, -math.inf,
    0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30,
    True, False,
    "", "text", "1", "1.0", "héllo ✓", "a\x00b",
    b"", b"\x00", bytes(range(256)),
]


def _exact(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and (a == b or (a != a and b != b))
    return type(a) is type(b) and a == b


async def test_every_value_type_round_trips_exactly(make_config: Callable[..., BufferConfig]
                                                    ) -> None:
    sent = [Reading("dev", f"p{i}", v, "u" if i % 2 else None, T0 + i)  # type: ignore[arg-type]
            for i, v in enumerate([*VALUES, math.nan])]
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:
        buf.submit(sent)
        await buf.flush()
        first = [r for _, r in await read_all(buf, "cloud")]
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:  # and from the file
        again = [r for _, r in await read_all(buf, "cloud")]
    for got in (first, again):
        assert len(got) == len(sent)
        for s, g in zip(sent, got, strict=True):
            assert (g.device, g.point, g.unit, g.time) == (s.device, s.point, s.unit, s.time)
            if isinstance(s.value, float) and math.isnan(s.value):
                assert isinstance(g.value, float) and math.isnan(g.value)
            else:
                assert _exact(s.value, g.value), (s.value, g.value)


async def test_submits_within_one_interval_make_one_transaction(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(commit_interval=0.3), uplinks={"cloud": ["*"]}) as buf:
        async with running(buf):
            for i in range(50):
                buf.submit(readings("dev", 10, start=i * 10))
                await asyncio.sleep(0)  # other tasks run between submits
            async with asyncio.timeout(5):
                await buf.wait_for_data(499)
            stats = await buf.stats()
    assert stats["commits"] == 1
    assert stats["committed_total"] == 500
    assert stats["rows"] == 500


async def test_flush_commits_now_and_ids_increase(make_config: Callable[..., BufferConfig]
                                                  ) -> None:
    async with Buffer(make_config(commit_interval=3600.0), uplinks={"cloud": ["*"]}) as buf:
        buf.submit(readings("dev", 3))
        await buf.flush()
        buf.submit(readings("dev", 2, start=3))
        await buf.flush()
        records = await read_all(buf, "cloud")
        stats = await buf.stats()
    assert [rid for rid, _ in records] == [1, 2, 3, 4, 5]
    assert [r.value for _, r in records] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert stats["commits"] == 2


async def test_wait_for_data_wakes_on_commit(make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:
        async with running(buf), asyncio.TaskGroup() as tg:
            waiter = tg.create_task(buf.wait_for_data(0))
            await asyncio.sleep(0)
            assert not waiter.done()
            buf.submit(readings("dev", 1))
            async with asyncio.timeout(5):
                await waiter
        assert buf.last_id() == 1
        # Already there: returns at once.
        async with asyncio.timeout(1):
            await buf.wait_for_data(0)


async def test_append_returns_once_committed(make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:
        async with running(buf):
            async with asyncio.timeout(5):
                await buf.append(readings("local", 4))
            # Committed: visible without any further flush.
            assert buf.last_id() == 4
            assert len(await read_all(buf, "cloud")) == 4


async def test_append_raises_when_its_readings_overflow(make_config: Callable[..., BufferConfig]
                                                        ) -> None:
    async with Buffer(make_config(max_pending=100), uplinks={"cloud": ["*"]}) as buf:
        async with running(buf):
            async def append_old() -> None:
                with pytest.raises(StorageError) as err:
                    await buf.append(readings("old", 60))
                assert err.value.reason == "overflow"

            async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
                tg.create_task(append_old())
                await asyncio.sleep(0)  # the append is queued
                buf.submit(readings("new", 80))  # pushes 40 of "old" out before any commit
            await buf.flush()
            stats = await buf.stats()
    assert stats["drops"] == {"overflow": {"old": 40}}
    assert stats["rows"] == 100


async def test_append_raises_for_unstorable_values(make_config: Callable[..., BufferConfig]
                                                   ) -> None:
    bad = [Reading("dev", "p", 1.0, None, T0), Reading("dev", "q", None, None, T0),  # type: ignore[arg-type]
           Reading("dev", "r", 2.0, None, 1.5), Reading("dev", "s", "\ud800", None, T0)]  # type: ignore[arg-type]
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:
        async with running(buf):
            with pytest.raises(StorageError) as err:
                async with asyncio.timeout(5):
                    await buf.append(bad)
            stats = await buf.stats()
            assert [r.point for _, r in await read_all(buf, "cloud")] == ["p"]
    assert err.value.reason == "invalid"
    assert stats["drops"] == {"invalid": {"dev": 3}}


async def test_closed_buffer_refuses_reads(make_config: Callable[..., BufferConfig]) -> None:
    buf = Buffer(make_config(), uplinks={"cloud": ["*"]})
    with pytest.raises(StorageError) as err:
        await buf.read("cloud", 0, 10)
    assert err.value.reason == "closed"
    stats = await buf.stats()
    assert stats["open"] is False


async def test_close_commits_pending(make_config: Callable[..., BufferConfig],
                                     tmp_path: Path) -> None:
    async with Buffer(make_config(commit_interval=3600.0), uplinks={"cloud": ["*"]}) as buf:
        buf.submit(readings("dev", 7))
    async with Buffer(make_config(), uplinks={"cloud": ["*"]}) as buf:
        assert [r.value for _, r in await read_all(buf, "cloud")] == [float(i) for i in range(7)]


async def test_durability_sets_synchronous_live(make_config: Callable[..., BufferConfig]) -> None:
    async def synchronous(buf: Buffer) -> int:
        db = buf._db  # the test reaches in: the setting lives on the connection only
        assert db is not None
        async with db.lock:
            return int(await db.scalar("PRAGMA synchronous"))

    async with Buffer(make_config(durability="batched"), uplinks={"all": ["*"]}) as buf:
        assert await synchronous(buf) == 1  # NORMAL
        async with running(buf):
            buf.reconfigure(make_config(durability="every-commit"), uplinks={"all": ["*"]})
            for start in range(2):  # the loop applies the change after its next commit
                buf.submit(readings("dev", 1, start=start))
                async with asyncio.timeout(5):
                    await buf.wait_for_data(buf.last_id())
            assert await synchronous(buf) == 2  # FULL
        assert (await buf.stats())["durability"] == "every-commit"
