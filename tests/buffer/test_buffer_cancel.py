"""Cancelling a commit at any point loses nothing and duplicates nothing.

The cancellation lands at a different point of the commit for each delay
(before BEGIN, inside executemany, while COMMIT is on its way, after it);
which delay hits which point depends on the machine, the outcome may not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from tests.buffer.buffer_support import read_all, readings

N = 30_000  # several insert transactions at this max_size


@pytest.mark.parametrize("delay_ms", range(0, 100, 4))
async def test_cancelled_flush_then_close(make_config: Callable[..., BufferConfig],
                                          delay_ms: int) -> None:
    config = make_config(max_size=8 * 1024 * 1024, commit_interval=3600.0)
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        buf.submit(readings("dev", N))
        async with asyncio.TaskGroup() as tg:
            flushing = tg.create_task(buf.flush())
            await asyncio.sleep(delay_ms / 1000)
            flushing.cancel()
        # Leaving the block closes the buffer: it commits whatever the
        # cancelled flush did not.
    async with Buffer(config, uplinks={"all": ["*"]}) as buf:
        records = await read_all(buf, "all")
        stats = await buf.stats()
    assert [r.value for _, r in records] == [float(i) for i in range(N)]
    assert stats["rows"] == N
    assert stats["drops_total"] == 0
