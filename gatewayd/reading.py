"""The one data type that crosses the core: a Reading."""

from __future__ import annotations

import time
from dataclasses import dataclass

Value = float | int | bool | str | bytes


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point of one device at one time.

    ``time`` is UTC in integer nanoseconds since the Unix epoch, everywhere.
    """

    device: str
    point: str
    value: Value
    unit: str | None = None
    time: int = 0

    @property
    def name(self) -> str:
        """The series name used upstream and by ``select`` patterns."""
        return f"{self.device}/{self.point}"


def now_ns() -> int:
    """The current UTC wall-clock time in nanoseconds."""
    return time.time_ns()
