"""Adapters that let the supervisor run drivers, uplinks and the buffer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gatewayd.buffer import Buffer
from gatewayd.driver import Driver, Sink
from gatewayd.reading import Reading
from gatewayd.uplink.mqtt import MqttUplink


class CountingSink:
    """The sink one device writes into: counts what passes, keeps the latest reading
    of each point (for ``read`` commands), hands it to the buffer."""

    def __init__(self, target: Sink) -> None:
        self.target = target
        self.readings = 0
        self.last_at: float | None = None
        self.last: dict[str, Reading] = {}  # point -> latest reading (bounded by the points)

    def submit(self, readings: Sequence[Reading]) -> None:
        if readings:
            self.readings += len(readings)
            self.last_at = time.time()
            for reading in readings:
                self.last[reading.point] = reading
            self.target.submit(readings)


class DeviceRunner:
    """Runs one driver against the buffer."""

    def __init__(self, driver: Driver, buffer: Sink) -> None:
        self.driver = driver
        self.name = f"device:{driver.name}"
        self.sink = CountingSink(buffer)

    async def run(self) -> None:
        await self.driver.run(self.sink)

    def health(self) -> dict[str, Any]:
        last = self.sink.last_at
        return {
            "driver": self.driver.kind,
            "readings": self.sink.readings,
            "last_reading_at": last,
            "last_reading_age_s": round(time.time() - last, 3) if last else None,
            **self.driver.health(),
        }


class BufferRunner:
    """Runs the buffer's commit loop."""

    name = "buffer"

    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer

    async def run(self) -> None:
        await self.buffer.run()

    def health(self) -> dict[str, Any]:
        return {}


class UplinkRunner:
    """Runs one uplink."""

    def __init__(self, name: str, uplink: MqttUplink) -> None:
        self.uplink = uplink
        self.name = f"uplink:{name}"

    async def run(self) -> None:
        await self.uplink.run()

    def health(self) -> dict[str, Any]:
        return self.uplink.health()
