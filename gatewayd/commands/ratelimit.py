"""Token buckets keyed by name: at most ``count`` per ``per`` seconds, bursts up to
``count``. Pure: the caller passes a monotonic clock."""

from __future__ import annotations

from dataclasses import dataclass

from .config import RateLimit


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """One bucket per key, created full. Keys are bounded by ``max_keys``: beyond it,
    buckets that have refilled completely are forgotten (they hold no state)."""

    def __init__(self, limit: RateLimit, *, max_keys: int = 4096) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(float(self.limit.count), bucket.tokens + elapsed * self.limit.rate)
        bucket.stamp = now

    def allow(self, key: str, now: float) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.limit.count), now)
        self._refill(bucket, now)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.limit.count:
                del self._buckets[key]

    def reconfigure(self, limit: RateLimit) -> None:
        """A new limit; buckets keep their tokens, capped at the new burst."""
        self.limit = limit
        for bucket in self._buckets.values():
            bucket.tokens = min(bucket.tokens, float(limit.count))
