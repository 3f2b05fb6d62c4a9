"""Which cursor position is safe to persist when acknowledgements come out of order.

Pure: no I/O, no clock. The uplink registers each batch it sends (the buffer
position ``upto`` it reaches and the number of MQTT messages it was split
into) and reports each PUBACK; the cursor advances only to the ``upto`` of the
highest batch such that it and every batch before it are fully acknowledged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class _Pending:
    token: int
    upto: int
    remaining: int


class UplinkCursor:
    """Acknowledged position of one uplink connection.

    ``acked`` starts at the persisted cursor and only ever grows. The number of
    batches held is bounded by the caller (at most ``max_inflight`` messages
    are unacknowledged at once).
    """

    def __init__(self, start: int) -> None:
        self._acked = start
        self._last_upto = start
        self._next_token = 0
        self._queue: deque[_Pending] = deque()
        self._by_token: dict[int, _Pending] = {}

    @property
    def acked(self) -> int:
        """The highest position up to which every batch is acknowledged."""
        return self._acked

    @property
    def pending(self) -> int:
        """Batches registered and not yet fully acknowledged."""
        return len(self._by_token)

    def add(self, upto: int, parts: int) -> int:
        """Register a batch reaching ``upto`` and sent as ``parts`` messages.

        Returns the token to pass to :meth:`ack` for each part. A batch of zero
        parts (the buffer skipped rows this uplink does not carry) counts as
        acknowledged at once. Raises ValueError if ``upto`` goes backwards or
        ``parts`` is negative.
        """
        if upto < self._last_upto:
            raise ValueError(f"batch upto {upto} is before the previous one ({self._last_upto})")
        if parts < 0:
            raise ValueError(f"a batch has at least 0 parts, got {parts}")
        token = self._next_token
        self._next_token += 1
        self._last_upto = upto
        entry = _Pending(token, upto, parts)
        self._queue.append(entry)
        if parts:
            self._by_token[token] = entry
        else:
            self._advance()
        return token

    def ack(self, token: int) -> bool:
        """One part of batch ``token`` was acknowledged.

        Returns True when :attr:`acked` advanced. Raises KeyError for a token
        that is unknown or already fully acknowledged.
        """
        entry = self._by_token[token]
        entry.remaining -= 1
        if entry.remaining:
            return False
        del self._by_token[token]
        return self._advance()

    def _advance(self) -> bool:
        before = self._acked
        queue = self._queue
        while queue and queue[0].remaining == 0:
            self._acked = queue.popleft().upto
        return self._acked != before
