"""Pure signal generators of the sim driver: no I/O, no clock."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SIGNALS = ("counter", "sine", "step", "random_walk", "constant")


@dataclass(frozen=True)
class SimPoint:
    name: str
    signal: str
    min: float = 0.0
    max: float = 1.0
    period: float = 60.0
    step: float = 0.1
    seed: int = 0
    value: float = 0.0
    unit: str | None = None


class SignalState:
    """The running state of one point: call ``next(elapsed)`` once per poll."""

    def __init__(self, point: SimPoint) -> None:
        self.point = point
        self.count = 0
        self._rng = random.Random(point.seed)  # noqa: S311 - a simulation
        self._walk = (point.min + point.max) / 2.0

    def next(self, elapsed: float) -> float | int:
        """The value at ``elapsed`` seconds after the driver started."""
        p = self.point
        n = self.count
        self.count += 1
        if p.signal == "counter":
            return n
        if p.signal == "sine":
            phase = 2.0 * math.pi * elapsed / p.period
            return p.min + (p.max - p.min) * (0.5 + 0.5 * math.sin(phase))
        if p.signal == "step":
            return p.max if int(elapsed // (p.period / 2.0)) % 2 else p.min
        if p.signal == "random_walk":
            self._walk += self._rng.uniform(-p.step, p.step)
            self._walk = min(p.max, max(p.min, self._walk))
            return self._walk
        return p.value
