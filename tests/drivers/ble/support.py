"""Helpers of the ble driver tests: options from a dict, a collecting sink, a
driver run as a task in the test's loop against the mocked bluetoothd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from gatewayd.drivers.ble.config import BleOptions
from gatewayd.drivers.ble.driver import BleDriver

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.driver import DeviceConfig
from gatewayd.reading import Reading

WAIT = 20.0  # generous: the machine may be loaded
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
PVVX_UUID = "0000181a-0000-1000-8000-00805f9b34fb"


def parse_table(table: dict[str, Any], path: str = "devices.s") -> tuple[BleOptions, list[str]]:
    problems = Problems(Origins("gatewayd.toml"))
    section = Section(table, path, problems)
    section.mark_used("driver")
    opts = BleDriver.parse_options(section)
    section.done()
    return opts, [str(p) for p in problems.items]


def make_driver(table: dict[str, Any], name: str = "s") -> BleDriver:
    opts, problems = parse_table(table, f"devices.{name}")
    if problems:
        raise AssertionError("\n".join(problems))
    return BleDriver(DeviceConfig(name=name, driver="ble", priority=0, enabled=True,
                                  options=opts))


class ListSink:
    """Collects every reading; ``wait_count`` returns once enough have arrived."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._arrived = asyncio.Event()

    def submit(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self._arrived.set()

    async def wait_count(self, n: int, within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            while len(self.readings) < n:
                self._arrived.clear()
                await self._arrived.wait()

    def values(self, point: str) -> list[object]:
        return [r.value for r in self.readings if r.point == point]


@asynccontextmanager
async def running(*drivers: BleDriver, sink: ListSink | None = None) -> AsyncIterator[ListSink]:
    """The drivers run (in the test's loop) for the block, then are cancelled."""
    sink = sink or ListSink()
    tasks = [asyncio.create_task(d.run(sink), name=f"driver {d.name}") for d in drivers]
    try:
        yield sink
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if not isinstance(r, asyncio.CancelledError) and isinstance(r, BaseException):
                raise r


async def until(driver: BleDriver, predicate: Callable[[BleDriver], bool],
                within: float = WAIT) -> None:
    try:
        async with asyncio.timeout(within):
            await driver.wait_until(predicate)
    except TimeoutError:
        raise AssertionError(f"condition not met in {within}s: {driver.health()}") from None


async def eventually(check: Callable[[], bool], within: float = WAIT) -> None:
    """For state that lives in the mock process (polled: it has no events to await)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the state is in another process
            await asyncio.sleep(0.05)
