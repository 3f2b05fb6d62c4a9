"""Assembling one uplink batch from the buffer: what the uplink needs of the buffer,
and the "fill up to max_records or max_delay" rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatewayd.reading import Reading


class BufferBatch(Protocol):
    """Rows read for one uplink; ack up to ``upto`` once they are acknowledged."""

    @property
    def records(self) -> Sequence[tuple[int, Reading]]: ...

    @property
    def upto(self) -> int: ...


class UplinkBuffer(Protocol):
    """The part of the durable buffer an uplink uses."""

    async def read(self, uplink: str, after: int, limit: int) -> BufferBatch: ...

    async def ack(self, uplink: str, upto: int) -> None: ...

    def cursor(self, uplink: str) -> int: ...

    async def wait_for_data(self, after: int) -> None: ...

    def last_id(self) -> int: ...

    async def stats(self) -> dict[str, Any]: ...


@dataclass
class Batch:
    """Readings to send and the buffer position they reach."""

    readings: list[Reading] = field(default_factory=list)
    upto: int = 0


async def wait_for_rows(buffer: UplinkBuffer, after: int) -> None:
    """Return once the buffer holds a row after ``after`` (at once if it does)."""
    if buffer.last_id() <= after:
        await buffer.wait_for_data(after)


async def next_batch(buffer: UplinkBuffer, uplink: str, *, after: int, max_records: int,
                     max_delay: float, read_ahead: int = 0) -> Batch:
    """The next batch after position ``after``: at most ``max_records`` readings, or up
    to ``read_ahead`` (when larger) if that many are already there: one read then
    serves several batches of ``max_records`` (the caller splits them).

    Waits for at least one reading. When fewer than ``max_records`` are there and
    the oldest is younger than ``max_delay`` (by its own timestamp), waits for
    more until the oldest is ``max_delay`` old or the batch is full, whichever
    comes first. Rows the buffer skips for this uplink still advance ``upto``:
    a batch may be empty only when ``upto`` moved (the caller acks it as is).
    """
    limit = max(max_records, read_ahead)
    read = await buffer.read(uplink, after, limit)
    while not read.records:
        if read.upto > after:
            return Batch([], read.upto)
        await wait_for_rows(buffer, after)
        read = await buffer.read(uplink, after, limit)
    batch = Batch([r for _, r in read.records], read.upto)
    if len(batch.readings) >= max_records:
        return batch
    age = (time.time_ns() - batch.readings[0].time) / 1e9
    wait = min(max_delay, max_delay - age)
    if wait <= 0:
        return batch
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(batch.readings) < max_records:
        try:
            async with asyncio.timeout_at(deadline):
                await wait_for_rows(buffer, batch.upto)
        except TimeoutError:
            break
        more = await buffer.read(uplink, batch.upto, max_records - len(batch.readings))
        batch.readings.extend(r for _, r in more.records)
        batch.upto = max(batch.upto, more.upto)
    return batch
