"""Helpers for the buffer tests: configs on real files, a running commit loop, readers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading

T0 = 1_700_000_000_000_000_000


def buffer_config(path: Path, **overrides: Any) -> BufferConfig:
    values: dict[str, Any] = dict(path=path, max_size=64 * 1024 * 1024, commit_interval=0.05,
                                  durability="batched", max_pending=100_000)
    values.update(overrides)
    return BufferConfig(**values)


def readings(device: str, n: int, *, start: int = 0, point: str = "p",
             unit: str | None = None) -> list[Reading]:
    """``n`` readings of ``device/point`` whose value is their index (as float) from ``start``."""
    return [Reading(device, point, float(start + i), unit, T0 + start + i) for i in range(n)]


@asynccontextmanager
async def running(buf: Buffer) -> AsyncIterator[Buffer]:
    """The buffer's commit loop running for the duration of the block."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(buf.run())
        try:
            yield buf
        finally:
            task.cancel()


async def read_all(buf: Buffer, uplink: str, after: int = 0) -> list[tuple[int, Reading]]:
    """Every record ``uplink`` can read after ``after``, following ``upto``."""
    out: list[tuple[int, Reading]] = []
    while True:
        batch = await buf.read(uplink, after, 1000)
        out.extend(batch.records)
        if batch.upto <= after:
            return out
        after = batch.upto


def on_disk(path: Path) -> int:
    """Bytes of the database file and its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(f"{path}{suffix}")
        except FileNotFoundError:
            pass
    return total
