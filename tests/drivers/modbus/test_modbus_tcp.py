"""The driver against pymodbus's server over TCP on loopback."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from gatewayd.drivers.modbus.driver import ModbusDriver

from gatewayd.errors import DriverError, WriteRefused
from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap

from .conftest import ListSink, make_driver, running, typed_points_and_registers, wait_health

pytestmark = pytest.mark.timeout(30)


def device(port: int, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"url": f"tcp://127.0.0.1:{port}", "poll": "300ms", "timeout": "500ms",
            "points": points, **extra}


def plan_counts(driver: ModbusDriver, cycles: int) -> Counter[tuple[int, int]]:
    return Counter({(r.unit, r.function): 0 for r in driver.plan}) + Counter(
        (r.unit, r.function) for r in driver.plan for _ in range(cycles))


EXTRA_POINTS = [
    {"name": "scaled", "address": "ir:500", "scale": 0.5, "offset": 10, "unit": "Cel"},
    {"name": "bit1", "address": "hr:600.1"},
    {"name": "bit2", "address": "hr:600.2"},
    {"name": "coil", "address": "co:7"},
    {"name": "input", "address": "di:3"},
    {"name": "word", "address": "hr:600", "unit": "1"},
]
EXTRA_EXPECTED = {"scaled": 627.0, "bit1": True, "bit2": False, "coil": True, "input": True,
                  "word": 0b1010}


def typed_slave() -> tuple[UnitMap, list[dict[str, Any]], dict[str, Any]]:
    points, registers, expected = typed_points_and_registers()
    unit = UnitMap(hr={**registers, 600: 0b1010}, ir={500: 1234}, co={7: True}, di={3: True})
    return unit, points + EXTRA_POINTS, expected | EXTRA_EXPECTED


async def test_every_type_and_order_decodes_exactly(sink: ListSink) -> None:
    unit, points, expected = typed_slave()
    async with PymodbusSlave({1: unit}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 1)
    assert sink.latest("dev") == expected
    assert {type(v) for k, v in sink.latest("dev").items() if k.startswith("int")} == {int}
    first = sink.batches[0]
    assert {r.point: r.unit for r in first if r.unit} == {"scaled": "Cel", "word": "1"}
    assert all(r.device == "dev" and r.time > 1_600_000_000 * 10**9 for r in first)


async def test_requests_per_cycle_equal_the_plan(sink: ListSink) -> None:
    unit, points, _ = typed_slave()
    async with PymodbusSlave({1: unit}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 3)
    # 36 typed points in hr:0..95, hr:600 (bits and word), ir:500, co:7, di:3
    assert [(r.function, r.start, r.count) for r in driver.plan] == [
        (1, 7, 1), (2, 3, 1), (3, 0, 96), (3, 600, 1), (4, 500, 1)]
    assert len(driver.plan) < len(points)
    assert slave.requests == plan_counts(driver, 3)
    health = driver.health()
    assert (health["cycles"], health["requests"], health["responses"]) == (3, 15, 15)
    assert health["requests_per_cycle"] == 5


async def test_modbus_exceptions_are_errors_of_their_points_only(sink: ListSink) -> None:
    unit = UnitMap(hr={0: 7, 700: 1}, exceptions={("hr", 700): 6})
    points = [{"name": "ok", "address": "hr:0"}, {"name": "busy", "address": "hr:700"},
              {"name": "missing", "address": "hr:5000"}]
    async with PymodbusSlave({1: unit}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 2)
    assert [r.point for r in sink.readings] == ["ok", "ok"]
    health = driver.health()
    assert health["points"]["busy"]["last_error"] == (
        "unit 1: Modbus exception 6 (server device busy)")
    assert health["points"]["missing"]["last_error"] == (
        "unit 1: Modbus exception 2 (illegal data address)")
    assert health["points"]["busy"]["errors"] == 2
    assert health["points"]["ok"] == {"errors": 0, "last_error": None,
                                      "last_good_ns": sink.readings[-1].time}
    assert (health["exceptions"], health["timeouts"], health["quarantined_units"]) == (4, 0, [])


async def test_reconnects_with_backoff_after_the_slave_restarts(sink: ListSink) -> None:
    async with PymodbusSlave({1: UnitMap(hr={0: 1})}) as slave:
        port = await slave.start_tcp()
        driver = make_driver(device(port, [{"name": "v", "address": "hr:0"}],
                                    poll="100ms", reconnect_delay="100ms",
                                    reconnect_delay_max="200ms"))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.readings) >= 1)
            await slave.stop()
            down = await wait_health(
                driver, lambda h: h["connection"].get("connect_failures", 0) >= 2)
            assert down["connection"]["state"] == "disconnected"
            assert down["connection"]["last_error"] == "could not connect"
            assert down["connection"]["reconnect_delay_s"] in (0.1, 0.2)
            assert down["points"]["v"]["last_error"].startswith(f"tcp://127.0.0.1:{port}: ")
            before = len(sink.readings)
            slave.units[1] = UnitMap(hr={0: 2})
            await slave.start_tcp(port)
            await sink.wait_for(lambda: len(sink.readings) > before)
            up = driver.health()
    assert sink.readings[-1].value == 2
    assert up["connection"]["state"] == "connected"
    assert up["connection"]["connects"] == 2
    assert up["connection"]["disconnects"] == 1
    assert up["points"]["v"]["last_error"] is None
    assert slave.connections == 2


async def test_writes_land_and_read_back(sink: ListSink) -> None:
    points = [
        {"name": "setpoint", "address": "hr:10", "type": "int16", "scale": 0.1,
         "writable": {"min": 20, "max": 80}},
        {"name": "limit", "address": "hr:20", "type": "float32", "order": "CDAB",
         "writable": {"min": -100, "max": 100}},
        {"name": "big", "address": "hr:30", "type": "uint64",
         "writable": {"min": 0, "max": 2**64}},
        {"name": "label", "address": "hr:40", "type": "string(6)", "writable": True},
        {"name": "pump", "address": "co:4", "writable": True},
    ]
    async with PymodbusSlave({1: UnitMap()}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 1)
            await driver.write("setpoint", 21.5)
            await driver.write("limit", -12.25)
            await driver.write("big", 2**63 + 1)
            await driver.write("label", "pump A")
            await driver.write("pump", True)
            expected = {"setpoint": 21.5, "limit": -12.25, "big": 2**63 + 1, "label": "pump A",
                        "pump": True}
            await sink.wait_for(lambda: sink.latest("dev") == expected)
            assert await slave.values(1, "hr", 10, 1) == [215]
            assert await slave.values(1, "hr", 20, 2) == [0x0000, 0xC144]
            assert await slave.values(1, "hr", 30, 4) == [0x8000, 0, 0, 1]
            assert await slave.values(1, "co", 4, 1) == [True]
    writes = {fc: n for (_, fc), n in slave.requests.items() if fc in (5, 6, 15, 16)}
    assert writes == {6: 1, 16: 3, 5: 1}
    assert driver.health()["writes"] == 5


async def test_write_multiple_uses_function_15_and_16(sink: ListSink) -> None:
    points = [{"name": "sp", "address": "hr:1", "writable": {"min": 0, "max": 10}},
              {"name": "pump", "address": "co:2", "writable": True}]
    async with PymodbusSlave({1: UnitMap()}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points, write_multiple=True))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 1)
            await driver.write("sp", 7)
            await driver.write("pump", 1)
            await sink.wait_for(lambda: sink.latest("dev") == {"sp": 7, "pump": True})
    assert {fc: n for (_, fc), n in slave.requests.items() if fc in (5, 6, 15, 16)} == {
        16: 1, 15: 1}


@pytest.mark.parametrize(("point", "value", "message"), [
    ("reading", 1, "point is not writable"),
    ("setpoint", 80.5, "value 80.5 is out of range [20, 80]"),
    ("setpoint", 19, "value 19 is out of range [20, 80]"),
    ("setpoint", "50", "expected a number, got '50'"),
    ("setpoint", True, "expected a number, got True"),
    ("setpoint", float("nan"), "nan is not a finite number"),
    ("pump", 2, "expected true or false, got 2"),
    ("nosuch", 1, "no point 'nosuch'"),
])
async def test_refused_writes_never_reach_the_device(point: str, value: Any, message: str,
                                                     sink: ListSink) -> None:
    points = [{"name": "reading", "address": "hr:0"},
              {"name": "setpoint", "address": "hr:1", "writable": {"min": 20, "max": 80}},
              {"name": "pump", "address": "co:2", "writable": True}]
    async with PymodbusSlave({1: UnitMap()}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points), name="boiler")
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 1)
            with pytest.raises(WriteRefused) as refused:
                await driver.write(point, value)
    assert str(refused.value) == message
    assert (refused.value.device, refused.value.point) == ("boiler", point)
    assert not any(fc in (5, 6, 15, 16) for (_, fc) in slave.requests)
    assert driver.health()["writes_refused"] == 1


async def test_write_to_a_stopped_driver_is_a_driver_error() -> None:
    driver = make_driver(device(1, [{"name": "sp", "address": "hr:1",
                                     "writable": {"min": 0, "max": 9}}]))
    with pytest.raises(DriverError, match="device is not running"):
        await driver.write("sp", 1)


async def test_a_write_the_device_rejects_is_a_driver_error(sink: ListSink) -> None:
    points = [{"name": "sp", "address": "hr:1", "writable": {"min": 0, "max": 9}}]
    async with PymodbusSlave({1: UnitMap(exceptions={("hr", 1): 4})}) as slave:
        driver = make_driver(device(await slave.start_tcp(), points))
        async with running(driver, sink=sink):
            await wait_health(driver, lambda h: h["cycles"] >= 1)
            with pytest.raises(DriverError) as failed:
                await driver.write("sp", 3)
    assert not isinstance(failed.value, WriteRefused)
    assert str(failed.value) == "write failed: unit 1: Modbus exception 4 (server device failure)"
    assert failed.value.point == "sp"


async def test_devices_on_one_endpoint_share_one_connection(sink: ListSink) -> None:
    units = {1: UnitMap(hr={0: 11}), 2: UnitMap(hr={0: 22})}
    async with PymodbusSlave(units) as slave:
        port = await slave.start_tcp()
        a = make_driver(device(port, [{"name": "v", "address": "hr:0"}], unit_id=1), name="a")
        b = make_driver(device(port, [{"name": "v", "address": "hr:0"}], unit_id=2), name="b")
        async with running(a, b, sink=sink):
            await sink.wait_for(lambda: len(sink.of("a", "v")) >= 2 and len(sink.of("b", "v")) >= 2)
            shared = a.health()["connection"]["shared_by"]
    assert shared == ["a", "b"]
    assert (sink.of("a", "v")[0].value, sink.of("b", "v")[0].value) == (11, 22)
    assert slave.connections == 1


async def test_rtu_over_tcp_with_a_silent_unit(sink: ListSink) -> None:
    """rtu+tcp: RTU frames to a serial device server; unit 9 behind it is silent."""
    async with PymodbusSlave({4: UnitMap(hr={3: 0xFFFF, 4: 0xFFFE})}) as slave:
        port = await slave.start_tcp(rtu_framing=True)
        driver = make_driver({"url": f"rtu+tcp://127.0.0.1:{port}", "poll": "200ms",
                              "timeout": "200ms", "quarantine_after": 2, "points": [
                                  {"name": "v", "address": "hr:3", "type": "int32",
                                   "unit_id": 4},
                                  {"name": "gone", "address": "hr:3", "unit_id": 9}]})
        async with running(driver, sink=sink):
            await wait_health(driver, lambda h: h["quarantined_units"] == [9])
            await sink.wait_for(lambda: len(sink.of("dev", "v")) >= 3)
            health = driver.health()
    assert {r.value for r in sink.of("dev", "v")} == {-2}
    assert sink.of("dev", "gone") == []
    assert health["timeouts"] == 2
    assert health["points"]["gone"] == {
        "errors": 2, "last_error": "unit 9 quarantined (unit 9: no answer within 0.2s)",
        "last_good_ns": None}
    assert health["connection"]["connects"] == 1


async def test_late_cycles_are_skipped_and_counted_never_queued(sink: ListSink) -> None:
    """A 100 ms poll of a silent unit with a 250 ms timeout: every cycle overruns
    its slot, so slots are skipped; each cycle that runs sends one request."""
    async with PymodbusSlave({1: UnitMap()}) as slave:
        port = await slave.start_tcp()
        driver = make_driver(device(port, [{"name": "v", "address": "hr:0"}], unit_id=3,
                                    poll="100ms", timeout="250ms", quarantine_after=100))
        async with running(driver, sink=sink):
            await wait_health(driver, lambda h: h["timeouts"] >= 4)
        health = driver.health()
    assert health["late_cycles"] >= 3  # at least one slot lost per 250 ms cycle
    # one request per finished cycle; one more may have been in flight at the end
    assert health["cycles"] == health["timeouts"]
    assert health["requests"] - health["timeouts"] in (0, 1)
    assert slave.count(unit=3) - health["timeouts"] in (0, 1)
    assert json.loads(json.dumps(health)) == health


async def test_a_quarantined_unit_that_answers_a_probe_is_polled_again(sink: ListSink) -> None:
    async with PymodbusSlave({2: UnitMap(hr={0: 9})}) as slave:
        slave.silent.add(2)
        driver = make_driver(device(await slave.start_tcp(), [{"name": "v", "address": "hr:0"}],
                                    unit_id=2, poll="100ms", timeout="100ms",
                                    quarantine_after=2, probe_interval="200ms"))
        async with running(driver, sink=sink):
            await wait_health(driver, lambda h: h["quarantined_units"] == [2])
            slave.silent.clear()
            await sink.wait_for(lambda: len(sink.of("dev", "v")) >= 2)
            health = driver.health()
    assert {r.value for r in sink.of("dev", "v")} == {9}
    assert health["units"]["2"] == {"quarantined": False, "consecutive_timeouts": 0,
                                    "quarantines": 1, "next_probe_in_s": None}
    assert health["quarantined_units"] == []
    assert health["points"]["v"]["last_error"] is None
