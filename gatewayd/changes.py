"""A component's "something changed" signal, so callers (and tests) await a condition
on its state instead of polling it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Changes:
    """``notify()`` wakes everyone waiting; ``until(read, predicate)`` returns ``read()``
    once ``predicate`` holds for it, re-checking at each change. Bound waits with
    ``asyncio.timeout``. Nothing polls and no event is kept while nobody waits."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def next(self) -> asyncio.Event:
        """The event the next ``notify()`` sets (take it before checking, so that a
        change in between is not missed)."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def wait(self) -> None:
        """Return at the next change."""
        await self.next().wait()

    async def until(self, read: Callable[[], T], predicate: Callable[[T], bool]) -> T:
        while True:
            changed = self.next()
            value = read()
            if predicate(value):
                return value
            await changed.wait()
