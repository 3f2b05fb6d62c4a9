"""Poll cycles aligned to a grid, for every driver that polls on an interval.

Pure: every method takes ``now`` (monotonic seconds), so the rule is tested by
feeding times. Polls fall on wall-clock multiples of their period (readings of
many devices line up), but run on the monotonic clock, so a wall-clock jump is
neither a stall nor a burst.
"""

from __future__ import annotations

import math


class CycleClock:
    """Poll cycles aligned to a grid: cycle k is due at ``origin + k * period``.

    A cycle that starts within its slot ``[due, due + period)`` runs, even late;
    a cycle whose whole slot has passed is skipped and counted, never queued.
    """

    def __init__(self, period: float, origin: float) -> None:
        self.period = period
        self.origin = origin
        self.tick = 0
        self.skipped = 0

    @classmethod
    def aligned(cls, period: float, *, now: float, wall: float) -> CycleClock:
        """A clock whose ticks fall on multiples of ``period`` in wall-clock time,
        expressed on the monotonic clock that gave ``now``."""
        next_wall = math.ceil(wall / period) * period
        return cls(period, now + (next_wall - wall))

    def due(self) -> float:
        """When the current cycle is due."""
        return self.origin + self.tick * self.period

    def start(self, now: float) -> int:
        """Begin the current cycle at ``now`` (at or after ``due()``); returns the
        number of cycles skipped because their slot passed before they could start."""
        behind = int((now - self.due()) // self.period) if now > self.due() else 0
        self.tick += behind
        self.skipped += behind
        return behind

    def advance(self) -> float:
        """Finish the current cycle; returns when the next one is due."""
        self.tick += 1
        return self.due()
