"""Helpers of the serial driver tests: options from a dict, a collecting sink,
a driver run as a task and cancelled at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gatewayd.drivers.serial.config import SerialOptions
from gatewayd.drivers.serial.driver import SerialDriver
from gatewayd.drivers.serial.nmea import KNOT

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.driver import DeviceConfig
from gatewayd.reading import Reading

CAPTURES = Path(__file__).parent / "captures"


def parse_table(table: dict[str, Any],
                path: str = "devices.gps") -> tuple[SerialOptions, list[str]]:
    """The options of one device table and every problem found, as text."""
    problems = Problems(Origins("gatewayd.toml"))
    section = Section(table, path, problems)
    section.mark_used("driver")
    options = SerialDriver.parse_options(section)
    section.done()
    return options, [str(p) for p in problems.items]


def options(table: dict[str, Any]) -> SerialOptions:
    """The options of a valid table; raises ConfigError otherwise."""
    opts, problems = parse_table(table)
    if problems:
        raise AssertionError("\n".join(problems))
    return opts


def make_driver(table: dict[str, Any], name: str = "gps") -> SerialDriver:
    return SerialDriver(DeviceConfig(name=name, driver="serial", priority=0, enabled=True,
                                     options=options(table)))


class ListSink:
    """Collects every reading; ``wait_count`` returns once enough have arrived."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self._arrived = asyncio.Event()

    def submit(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self.batches += 1
        self._arrived.set()

    async def wait_count(self, n: int) -> None:
        while len(self.readings) < n:
            self._arrived.clear()
            await self._arrived.wait()

    def values(self) -> list[tuple[str, object, str | None]]:
        """(point, value, unit) of every reading, in order."""
        return [(r.point, r.value, r.unit) for r in self.readings]


@asynccontextmanager
async def running(driver: SerialDriver, sink: ListSink) -> AsyncIterator[None]:
    """Run the driver in a task of a TaskGroup; cancel it when the block ends."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(driver.run(sink))
        try:
            yield
        finally:
            task.cancel()


async def until(driver: SerialDriver, predicate: Callable[[dict[str, Any]], bool]) -> None:
    """Return once ``predicate(driver.health())`` holds."""
    await driver.wait_until(lambda d: predicate(d.health()))


def ublox_epoch(i: int) -> list[tuple[str, object]]:
    """What one epoch of ublox_m8_drive.nmea gives, from the values written in it."""
    lat_min = float(f"17.{11437 + 250 * i:05d}")
    lon_min = float(f"33.{91522 + 410 * i:05d}")
    return [
        ("latitude", 47 + lat_min / 60), ("longitude", 8 + lon_min / 60),
        ("speed", float(f"{12.3 + 0.1 * i:.3f}") * KNOT),
        ("course", float(f"{52.1 + 0.3 * i:.2f}")),
        ("fix_quality", 1), ("satellites", 12), ("hdop", 0.78),
        ("altitude", float(f"{499.6 + 0.1 * i:.1f}")),
        ("fix_type", 3), ("pdop", 1.45), ("vdop", 1.22),
    ]
