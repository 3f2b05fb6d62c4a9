"""What the buffer counts for status: drops per reason and device, storage faults."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from gatewayd.reading import Reading

# Why readings were dropped.
BUFFER_FULL = "buffer_full"  # evicted to keep the file under max_size
OVERFLOW = "overflow"  # the in-memory pending queue was full
DISK_FULL = "disk_full"  # SQLITE_FULL that evicting did not cure
IO_ERROR = "io_error"  # an I/O error (or corruption) failed the commit
INVALID = "invalid"  # a value or time SQLite cannot store
DROP_REASONS = (BUFFER_FULL, OVERFLOW, DISK_FULL, IO_ERROR, INVALID)


class DropCounts:
    """Readings dropped, per reason and device."""

    def __init__(self) -> None:
        self._by_reason: dict[str, Counter[str]] = {}
        self.total = 0

    def add(self, reason: str, per_device: Mapping[str, int]) -> None:
        counter = self._by_reason.setdefault(reason, Counter())
        for device, n in per_device.items():
            counter[device] += n
            self.total += n

    def add_readings(self, reason: str, readings: Iterable[Reading]) -> None:
        self.add(reason, Counter(r.device for r in readings))

    def get(self, reason: str, device: str) -> int:
        return self._by_reason.get(reason, Counter())[device]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {reason: dict(sorted(c.items())) for reason, c in sorted(self._by_reason.items())}


class DropReport:
    """One log line per burst of drops: the first drop is logged at once, later ones are
    summed and logged at most once per ``interval`` seconds (on the next drop after it)."""

    def __init__(self, logger: logging.Logger, message: str, interval: float = 60.0) -> None:
        self._log = logger
        self._message = message  # "%d" for the count, then "%s" for the reason
        self._interval = interval
        self._unreported = 0
        self._next = 0.0

    def add(self, n: int, reason: str) -> None:
        self._unreported += n
        now = time.monotonic()
        if now >= self._next:
            self._log.warning(self._message, self._unreported, reason)
            self._unreported = 0
            self._next = now + self._interval


class FaultLog:
    """Storage faults: a counter per reason, the last error, and a raised alarm.

    The alarm is raised by a fault and cleared by the next commit that needed
    no recovery; ``last_error`` and the counters stay.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.alarm: str | None = None
        self.last_error: str | None = None
        self.last_error_time: float | None = None

    def record(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.alarm = reason
        self.last_error = message
        self.last_error_time = time.time()

    def clear_alarm(self) -> None:
        self.alarm = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "errors": dict(sorted(self.counts.items())),
            "alarm": self.alarm,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }
