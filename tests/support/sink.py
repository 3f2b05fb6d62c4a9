"""A driver's sink for tests: collects readings; tests await conditions on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gatewayd.reading import Reading


class ListSink:
    """Collects readings; tests await conditions on them (no sleeps)."""

    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []
        self._changed = asyncio.Event()

    def submit(self, readings: Sequence[Reading]) -> None:
        self.batches.append(list(readings))
        self._changed.set()

    @property
    def readings(self) -> list[Reading]:
        return [r for batch in self.batches for r in batch]

    def of(self, device: str, point: str) -> list[Reading]:
        return [r for r in self.readings if r.device == device and r.point == point]

    def values(self, device: str, point: str) -> list[Any]:
        return [r.value for r in self.of(device, point)]

    def latest(self, device: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in self.readings:
            if r.device == device:
                out[r.point] = r.value
        return out

    async def wait_for(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        """Return once ``predicate()`` holds after a submit; fail after ``within`` s."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
