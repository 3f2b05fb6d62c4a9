"""The driver against pymodbus's server over RTU on a socat pty pair."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.errors import DriverError
from tests.peers.modbus_pty import pty_pair
from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap

from .conftest import ListSink, make_driver, running, typed_points_and_registers, wait_health

pytestmark = pytest.mark.timeout(30)

LINE = "baudrate=115200&parity=N"


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async with pty_pair(tmp_path) as ends:
        yield ends


def device(port: str, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"url": f"rtu://{port}?{LINE}", "poll": "300ms", "timeout": "300ms",
            "points": points, **extra}


async def test_values_and_requests_per_cycle_over_rtu(line: tuple[str, str],
                                                      sink: ListSink) -> None:
    master_end, slave_end = line
    points, registers, expected = typed_points_and_registers()
    points += [{"name": "coil", "address": "co:9"}, {"name": "temp", "address": "ir:3",
                                                      "type": "int16", "scale": 0.5}]
    unit = UnitMap(hr=registers, co={9: True}, ir={3: (-7) & 0xFFFF})
    async with PymodbusSlave({5: unit}) as slave:
        await slave.start_serial(slave_end, baudrate=115200, parity="N")
        driver = make_driver(device(master_end, points, unit_id=5))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 3)
    assert sink.latest("dev") == expected | {"coil": True, "temp": -3.5}
    assert [(r.unit, r.function, r.start, r.count) for r in driver.plan] == [
        (5, 1, 9, 1), (5, 3, 0, 96), (5, 4, 3, 1)]
    assert slave.requests == Counter({(5, 1): 3, (5, 3): 3, (5, 4): 3})


async def test_a_silent_unit_does_not_slow_the_healthy_one(line: tuple[str, str],
                                                          sink: ListSink) -> None:
    """Two units on one RTU bus, unit 2 silent. Once unit 2 is quarantined the
    healthy unit keeps at least 90% of its 5 cycles/s over a 4 s window, and
    unit 2 costs one timeout per probe."""
    master_end, slave_end = line
    poll, window = 0.2, 4.0
    async with PymodbusSlave({1: UnitMap(hr={0: 42})}) as slave:
        await slave.start_serial(slave_end, baudrate=115200, parity="N")
        healthy = make_driver(device(master_end, [{"name": "v", "address": "hr:0"}],
                                     poll="200ms", unit_id=1), name="healthy")
        silent = make_driver(device(master_end, [{"name": "v", "address": "hr:0"}],
                                    poll="200ms", unit_id=2, quarantine_after=2,
                                    probe_interval="1s", probe_interval_max="4s"), name="silent")
        async with running(healthy, silent, sink=sink):
            await wait_health(silent, lambda h: h["quarantined_units"] == [2])
            start = time.time_ns()
            probes_before = slave.count(unit=2)
            end = start + int(window * 1e9)
            await sink.wait_for(lambda: any(r.time >= end for r in sink.of("healthy", "v")))
            probes = slave.count(unit=2) - probes_before
            silent_health = silent.health()
    in_window = [r for r in sink.of("healthy", "v") if start <= r.time < end]
    expected_cycles = window / poll
    assert len(in_window) >= 0.9 * expected_cycles, (len(in_window), expected_cycles)
    assert {r.value for r in in_window} == {42}
    assert probes <= 3  # probes 1 s, then 2 s after quarantine: 2 in 4 s (3 at a boundary)
    assert sink.of("silent", "v") == []
    assert silent_health["units"]["2"]["quarantined"] is True
    assert silent_health["points"]["v"]["last_error"] == (
        "unit 2 quarantined (unit 2: no answer within 0.3s)")
    # every request to unit 2 timed out; a probe may still have been in flight
    assert slave.count(unit=2) - silent_health["timeouts"] in (0, 1)
    assert silent_health["responses"] == 0


async def test_write_over_rtu_reads_back(line: tuple[str, str], sink: ListSink) -> None:
    master_end, slave_end = line
    points = [{"name": "sp", "address": "hr:2", "type": "uint32", "order": "DCBA",
               "writable": {"min": 0, "max": 100000}}]
    async with PymodbusSlave({1: UnitMap()}) as slave:
        await slave.start_serial(slave_end, baudrate=115200, parity="N")
        driver = make_driver(device(master_end, points))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 1)
            await driver.write("sp", 70000)  # 0x00011170
            await sink.wait_for(lambda: sink.latest("dev") == {"sp": 70000})
            assert await slave.values(1, "hr", 2, 2) == [0x7011, 0x0100]


async def test_a_missing_serial_port_is_reported_with_backoff(tmp_path: Path,
                                                             sink: ListSink) -> None:
    port = tmp_path / "ttyUSB9"
    driver = make_driver(device(str(port), [{"name": "v", "address": "hr:0"}],
                                poll="50ms", reconnect_delay="100ms"))
    async with running(driver, sink=sink):
        health = await wait_health(
            driver, lambda h: h["connection"].get("connect_failures", 0) >= 2)
    assert health["connection"]["state"] == "disconnected"
    assert health["connection"]["last_error"] == f"serial port {port} not found"
    assert health["points"]["v"]["last_error"] == (
        f"rtu://{port}?baudrate=115200&parity=N&stopbits=1&bytesize=8: "
        f"serial port {port} not found")
    assert sink.readings == []


async def test_devices_on_one_port_must_agree_on_the_line(line: tuple[str, str],
                                                         sink: ListSink) -> None:
    master_end, _ = line
    a = make_driver(device(master_end, [{"name": "v", "address": "hr:0"}]), name="a")
    b = make_driver({**device(master_end, [{"name": "v", "address": "hr:0"}]),
                     "url": f"rtu://{master_end}?baudrate=9600"}, name="b")
    with pytest.raises(ExceptionGroup) as group:
        async with running(a, b, sink=sink):
            await wait_health(a, lambda h: h["connection"]["state"] != "stopped")
    [error] = group.value.exceptions
    assert isinstance(error, DriverError) and error.device == "b"
    assert str(error) == (
        f"serial port {master_end} is already open at 115200 8N1 (by a); all devices on one "
        "bus need the same baudrate, parity, stopbits and bytesize, got 9600 8E1")
