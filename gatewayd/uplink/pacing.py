"""Reconnect backoff and drain pacing. Pure: the caller passes the clock.

``Backoff``: exponential with full jitter between ``initial`` and the current
cap, so a fleet that lost its broker at the same moment comes back spread
out. ``TokenBucket``: at most ``rate`` readings per second on average, bursts
up to ``burst``.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 62


class Backoff:
    """Delays before reconnect attempts.

    Attempt n (from 0) waits a uniformly random time in
    ``[initial, min(maximum, initial * 2**n)]``: the first retry waits
    ``initial`` exactly, later ones spread over a window that doubles each time
    up to ``maximum``. The floor keeps a broken peer from being hammered.
    """

    def __init__(self, initial: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError("backoff delays must be positive")
        self.initial = min(initial, maximum)
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def cap(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.initial * 2.0 ** min(self.attempts, _MAX_DOUBLINGS))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        delay = self._rng.uniform(self.initial, self.cap())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start over from ``initial`` (after a connection that worked)."""
        self.attempts = 0


class TokenBucket:
    """Pacing at ``rate`` items per second (``rate`` 0 = unlimited).

    :meth:`take` always grants the request and returns how long to wait before
    acting on it; a request larger than what is available puts the bucket in
    debt, so the long-run rate holds whatever the request sizes.
    """

    def __init__(self, rate: float, burst: float, *, now: float) -> None:
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, count: float, *, now: float) -> float:
        """Take ``count`` tokens; returns the seconds to wait before using them."""
        if self.rate == 0:
            return 0.0
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - count
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class RateMeter:
    """Events per second over the last ``window`` seconds, in one-second buckets.

    ``add(n, now)`` counts ``n`` events at ``now`` (seconds, monotonic); ``rate(now)``
    is the sum of the buckets within the window divided by the window. Memory is
    ``window`` integers, whatever the rate.
    """

    def __init__(self, window: int = 10) -> None:
        if window < 1:
            raise ValueError("the window must be at least one second")
        self.window = window
        self._buckets = [0] * window
        self._second: int | None = None  # the second of the newest bucket

    def _advance(self, now: float) -> None:
        second = int(now)
        if self._second is None:
            self._second = second
            return
        gap = second - self._second
        if gap <= 0:
            return
        for k in range(1, min(gap, self.window) + 1):
            self._buckets[(self._second + k) % self.window] = 0
        self._second = second

    def add(self, n: int, now: float) -> None:
        self._advance(now)
        self._buckets[int(now) % self.window] += n

    def rate(self, now: float) -> float:
        self._advance(now)
        return sum(self._buckets) / self.window
