"""max_size: the file never exceeds it; drops are counted exactly, lowest priority first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading
from tests.buffer.buffer_support import T0, on_disk, read_all, readings, running

MIB = 1024 * 1024


async def test_file_stays_under_max_size_and_drops_are_exact(
        make_config: Callable[..., BufferConfig]) -> None:
    config = make_config(max_size=MIB)
    sizes = []
    total = 60_000
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        for start in range(0, total, 1500):
            buf.submit(readings("dev", 1500, start=start))
            await buf.flush()
            sizes.append(on_disk(config.path))
        stats = await buf.stats()
        kept = await read_all(buf, "all")
    assert max(sizes) <= MIB, max(sizes)
    assert stats["file_bytes"] <= MIB
    dropped = stats["drops"]["buffer_full"]["dev"]
    assert stats["drops"] == {"buffer_full": {"dev": dropped}}
    assert stats["drops_total"] == dropped
    assert len(kept) == stats["rows"] == total - dropped
    assert dropped > total // 2  # the cap really was reached, many times over
    # The oldest went: what is left is the newest, in order, values exact.
    assert [r.value for _, r in kept] == [float(i) for i in range(dropped, total)]
    assert stats["uplinks"]["all"]["backlog_rows"] == len(kept)


async def test_lowest_priority_goes_first(make_config: Callable[..., BufferConfig]) -> None:
    config = make_config(max_size=MIB)
    total_low = 0
    async with Buffer(config, uplinks={"all": ["*"]}, priorities={"high": 5}) as buf:
        for start in range(0, 40_000, 2000):
            buf.submit(readings("low", 1800, start=total_low))
            buf.submit(readings("high", 200, start=start // 10))
            total_low += 1800
            await buf.flush()
            assert on_disk(config.path) <= MIB
        stats = await buf.stats()
        kept = await read_all(buf, "all")
    high = [r.value for _, r in kept if r.device == "high"]
    low = [r.value for _, r in kept if r.device == "low"]
    assert high == [float(i) for i in range(4000)]  # every high-priority reading is there
    dropped = stats["drops"]["buffer_full"]["low"]
    assert stats["drops"] == {"buffer_full": {"low": dropped}}
    assert low == [float(i) for i in range(dropped, total_low)]  # the oldest low ones went
    assert len(kept) + stats["drops_total"] == 40_000


async def test_large_values_stay_within_the_budget(make_config: Callable[..., BufferConfig]
                                                   ) -> None:
    config = make_config(max_size=MIB)
    payload = "x" * 900
    sent = 0
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        for _ in range(40):
            buf.submit([Reading("dev", "blob", f"{sent + i}:{payload}", None, T0 + sent + i)
                        for i in range(100)])
            sent += 100
            await buf.flush()
            assert on_disk(config.path) <= MIB
        stats = await buf.stats()
        kept = await read_all(buf, "all")
    assert len(kept) + stats["drops_total"] == sent
    first = int(str(kept[0][1].value).split(":")[0])
    assert [str(r.value) for _, r in kept] == [f"{i}:{payload}" for i in range(first, sent)]


async def test_lowering_max_size_live_shrinks_the_file(make_config: Callable[..., BufferConfig]
                                                       ) -> None:
    config = make_config(max_size=4 * MIB)
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        for start in range(0, 100_000, 5000):
            buf.submit(readings("dev", 5000, start=start))
            await buf.flush()
        assert on_disk(config.path) > 2 * MIB
        async with running(buf):
            buf.reconfigure(make_config(max_size=MIB), uplinks={"all": ["*"]})
            # The commit loop applies the change after its next commit; the commit
            # after that proves it has run.
            for _ in range(2):
                buf.submit(readings("dev", 1, start=100_000))
                async with asyncio.timeout(10):
                    await buf.wait_for_data(buf.last_id())
            stats = await buf.stats()
    assert stats["max_size"] == MIB
    assert on_disk(config.path) <= MIB
    assert stats["rows"] + stats["drops_total"] == 100_002
