"""The bounded in-memory queue of readings waiting for the next commit. No I/O.

Readings arrive in chunks (one ``submit`` or ``append`` call each). The queue
holds at most ``limit`` readings; on overflow the oldest readings go first,
and an ``append`` that loses any of its readings fails with reason
``overflow``. The caller counts what ``put`` returns as dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from gatewayd.errors import StorageError
from gatewayd.reading import Reading


class AppendTicket:
    """The promise behind one ``Buffer.append`` call.

    Resolved when the commit holding its last reading succeeds; failed with
    ``StorageError(reason=...)`` as soon as any of its readings is dropped.
    """

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def done(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_exception(
                StorageError(f"buffer dropped appended readings ({reason})", reason=reason))


@dataclass
class PendingChunk:
    readings: list[Reading]
    ticket: AppendTicket | None = None


class PendingQueue:
    """FIFO of chunks, bounded by the number of readings it holds."""

    def __init__(self, limit: int) -> None:
        self._chunks: deque[PendingChunk] = deque()
        self._size = 0
        self.limit = limit

    def __len__(self) -> int:
        return self._size

    def put(self, readings: list[Reading], ticket: AppendTicket | None = None) -> list[Reading]:
        """Queue ``readings`` at the back; returns the readings dropped to stay in bounds."""
        if not readings:
            if ticket is not None:
                ticket.done()
            return []
        self._chunks.append(PendingChunk(readings, ticket))
        self._size += len(readings)
        return self._trim()

    def requeue(self, chunks: Iterable[PendingChunk]) -> list[Reading]:
        """Put chunks back at the front, in order (a commit that did not happen)."""
        for chunk in reversed(list(chunks)):
            if chunk.readings:
                self._chunks.appendleft(chunk)
                self._size += len(chunk.readings)
        return self._trim()

    def take(self) -> list[PendingChunk]:
        """Everything queued, oldest first; the queue is left empty."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._size = 0
        return chunks

    def set_limit(self, limit: int) -> list[Reading]:
        self.limit = limit
        return self._trim()

    def _trim(self) -> list[Reading]:
        dropped: list[Reading] = []
        while self._size > self.limit:
            head = self._chunks[0]
            excess = self._size - self.limit
            if head.ticket is not None:
                head.ticket.fail("overflow")
            if len(head.readings) <= excess:
                self._chunks.popleft()
                dropped.extend(head.readings)
                self._size -= len(head.readings)
            else:
                dropped.extend(head.readings[:excess])
                head.readings = head.readings[excess:]
                self._size -= excess
        return dropped
