"""The contract every driver implements, and how drivers are found.

Drivers are discovered through the entry-point group ``gatewayd.drivers``:
a third party ships a driver as its own package by naming its Driver
subclass there. A driver is built from its validated, frozen options; its
``run(sink)`` hands Readings to the sink until cancelled.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

from gatewayd.config.section import Section, number
from gatewayd.errors import WriteRefused
from gatewayd.reading import Reading, Value

ENTRY_POINT_GROUP = "gatewayd.drivers"


class Sink(Protocol):
    """Where a driver hands its readings. ``submit`` never blocks and never fails:
    readings are queued for the next buffer commit (bounded, oldest dropped and
    counted on overflow)."""

    def submit(self, readings: Sequence[Reading]) -> None: ...


@dataclass(frozen=True)
class DeviceConfig:
    """One ``[devices.NAME]`` table: the common keys plus the driver's own options."""

    name: str
    driver: str
    priority: int
    enabled: bool
    options: Any  # the driver's frozen options dataclass


@dataclass(frozen=True)
class Writable:
    """The values a command may write to a point, in engineering units. ``min`` and
    ``max`` bound a numeric point; a bool or string point has neither (any value)."""

    min: float | None = None
    max: float | None = None


def parse_writable(s: Section, raw: object, *, numeric: bool) -> Writable | None:
    """A point's ``writable`` key: absent or false, not writable (None); ``true``, any
    value of a bool or string point; ``{ min = ..., max = ... }``, the range of a
    numeric point (both required, finite, min <= max). Problems are recorded on ``s``
    under ``writable`` and give None."""
    if raw is None or raw is False:
        return None
    if raw is True:
        if numeric:
            s.error("writable", "expected a table { min = ..., max = ... } for a numeric point")
            return None
        return Writable()
    if not isinstance(raw, dict):
        s.error("writable", "expected true or a table { min = ..., max = ... }")
        return None
    ws = Section(raw, s.key_path("writable"), s.problems)
    if not numeric:
        ws.done()  # any key is unknown: bool and string points take no range
        return Writable()
    lo = ws.get("min", number)
    hi = ws.get("max", number)
    ws.done()
    if lo is None or hi is None:
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        ws.error(None, f"expected finite min <= max, got min = {lo:g}, max = {hi:g}")
        return None
    return Writable(min=lo, max=hi)


class Driver(abc.ABC):
    """Base class of every driver.

    Subclasses set ``kind`` and implement ``parse_options`` (pure, records
    problems on the section, never raises) and ``run``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.name = device.name

    @classmethod
    @abc.abstractmethod
    def parse_options(cls, section: Section) -> Any:
        """Read this driver's keys from ``section`` into a frozen dataclass."""

    @abc.abstractmethod
    async def run(self, sink: Sink) -> None:
        """Produce readings into ``sink`` until cancelled.

        Raises DriverError (or any error) when the device fails; the supervisor
        restarts the driver with backoff.
        """

    async def write(self, point: str, value: Value) -> None:
        """Write ``value`` to ``point``. Raises WriteRefused unless overridden."""
        raise WriteRefused(f"driver {self.kind!r} does not support writes",
                           device=self.name, point=point)

    def health(self) -> dict[str, Any]:
        """Driver-specific status fields (JSON-serialisable)."""
        return {}


def available_drivers() -> dict[str, type[Driver]]:
    """Every installed driver class by name (loaded lazily, one import each)."""
    found: dict[str, type[Driver]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def driver_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_driver(name: str) -> type[Driver] | None:
    """The driver class registered as ``name``, or None when none is."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, Driver):
            return cls
    return None
