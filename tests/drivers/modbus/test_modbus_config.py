"""Option parsing: URLs, point maps, defaults, and problems that name the key path."""

from __future__ import annotations

from typing import Any

import pytest
from gatewayd.drivers.modbus.codec import ValueType
from gatewayd.drivers.modbus.config import Endpoint, Writable, parse_endpoint
from gatewayd.drivers.modbus.driver import ModbusDriver

from gatewayd.config.schema import parse_device
from gatewayd.config.section import Origins, Problems, Section

from .conftest import parse

HR = {"name": "x", "address": "hr:0"}


def problems_of(table: dict[str, Any]) -> list[str]:
    return [str(p) for p in parse(table, "boiler")[1]]


def test_design_example_parses_with_defaults() -> None:
    options, problems = parse({
        "url": "rtu:///dev/ttyUSB0?baudrate=9600&parity=E",
        "unit_id": 3,
        "poll": "5s",
        "points": [
            {"name": "flow_temp", "address": "hr:100", "type": "float32", "order": "CDAB",
             "unit": "Cel"},
            {"name": "pressure", "address": "ir:7", "type": "uint16", "scale": 0.01,
             "unit": "bar"},
            {"name": "pump_on", "address": "hr:300.2", "type": "bool"},
            {"name": "setpoint", "address": "hr:200", "type": "int16",
             "writable": {"min": 20, "max": 80}},
        ],
    })
    assert problems == []
    assert options.endpoint == Endpoint(scheme="rtu", device="/dev/ttyUSB0", baudrate=9600,
                                        parity="E", stopbits=1, bytesize=8)
    assert (options.unit_id, options.poll, options.timeout) == (3, 5.0, 1.0)
    assert (options.max_gap, options.max_bit_gap, options.max_registers, options.max_bits) == (
        10, 160, 125, 2000)
    assert (options.quarantine_after, options.probe_interval, options.probe_interval_max) == (
        3, 1.0, 60.0)
    assert (options.reconnect_delay, options.reconnect_delay_max) == (0.5, 30.0)
    flow, pressure, pump, setpoint = options.points
    assert (flow.space, flow.address, flow.type, flow.order, flow.unit, flow.unit_id,
            flow.poll) == ("hr", 100, ValueType("float32"), "CDAB", "Cel", 3, 5.0)
    assert (pressure.space, pressure.scale, pressure.writable) == ("ir", 0.01, None)
    assert (pump.bit, pump.type, pump.width) == (2, ValueType("bool"), 1)
    assert setpoint.writable == Writable(min=20.0, max=80.0)


def test_parse_device_finds_the_driver_by_entry_point() -> None:
    problems = Problems(Origins("gatewayd.toml"))
    device = parse_device("boiler", Section(
        {"driver": "modbus", "url": "tcp://10.0.0.5", "points": [HR]}, "devices.boiler",
        problems))
    assert problems.items == []
    assert device is not None and device.driver == "modbus"
    assert device.options.endpoint == Endpoint(scheme="tcp", host="10.0.0.5", port=502)


@pytest.mark.parametrize(("url", "endpoint"), [
    ("tcp://plc.local:5020", Endpoint(scheme="tcp", host="plc.local", port=5020)),
    ("tcp://[::1]:502", Endpoint(scheme="tcp", host="::1", port=502)),
    ("rtu+tcp://192.0.2.7:4001", Endpoint(scheme="rtu+tcp", host="192.0.2.7", port=4001)),
    ("rtu:///dev/ttyAMA0", Endpoint(scheme="rtu", device="/dev/ttyAMA0", baudrate=19200,
                                    parity="E")),
    ("rtu:///dev/ttyUSB1?baudrate=115200&parity=N&stopbits=2&bytesize=7",
     Endpoint(scheme="rtu", device="/dev/ttyUSB1", baudrate=115200, parity="N", stopbits=2,
              bytesize=7)),
])
def test_endpoints(url: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(url) == endpoint


@pytest.mark.parametrize(("url", "message"), [
    ("udp://x:1", "unknown scheme 'udp://'"),
    ("rtu+tcp://host", "missing port in 'rtu+tcp://host'; expected rtu+tcp://HOST:PORT"),
    ("tcp://:502", "missing host"),
    ("tcp://h:99999", "invalid port"),
    ("tcp://h:502/x", "unexpected path or query"),
    ("rtu://dev/ttyUSB0", "invalid serial URL"),
    ("rtu:///dev/ttyUSB0?baud=9600", "unknown serial parameter 'baud'"),
    ("rtu:///dev/ttyUSB0?parity=X", "invalid parity 'X'"),
    ("rtu:///dev/ttyUSB0?stopbits=3", "invalid stopbits '3'; expected 1 or 2"),
    ("rtu:///dev/ttyUSB0?baudrate=fast", "invalid baudrate 'fast'; expected 50 to 4000000"),
])
def test_bad_endpoints(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse_endpoint(url)


def test_serial_timing() -> None:
    assert parse_endpoint("rtu:///dev/x?baudrate=9600&parity=E").frame_silence() == (
        pytest.approx(3.5 * 11 / 9600))
    assert parse_endpoint("rtu:///dev/x?baudrate=115200").frame_silence() == 0.00175
    assert parse_endpoint("tcp://h").frame_silence() == 0.0


def test_typo_in_type_names_the_key_path_and_suggests() -> None:
    msgs = problems_of({"url": "tcp://h", "points": [HR, HR | {"name": "y"}, HR | {"name": "z"},
                                                     {"name": "t", "address": "hr:9",
                                                      "type": "flaot32"}]})
    assert msgs == [
        "gatewayd.toml: devices.boiler.points[3].type: unknown value 'flaot32' (did you mean "
        "'float32'?); expected one of int16, uint16, int32, uint32, int64, uint64, float32, "
        "float64, bool, string(n)"]


@pytest.mark.parametrize(("point", "message"), [
    ({"name": "a", "address": "hr100"}, "points[0].address: invalid address 'hr100'; expected "
     "SPACE:NUMBER or SPACE:NUMBER.BIT with SPACE one of hr, ir, co, di"),
    ({"name": "a", "address": "xr:1"}, "points[0].address: invalid address 'xr:1'"),
    ({"name": "a", "address": "hr:65536"}, "expected a register number 0 to 65535"),
    ({"name": "a", "address": "hr:1.16"}, "expected a bit index 0 to 15"),
    ({"name": "a", "address": "co:1.2"}, "a bit index applies to hr and ir only"),
    ({"name": "a", "address": "hr:65535", "type": "float32"},
     "points[0].address: float32 at register 65535 runs past register 65535"),
    ({"name": "a", "address": "co:1", "type": "int16"},
     "points[0].type: a co point is of type bool, got int16"),
    ({"name": "a", "address": "hr:1.3", "type": "uint16"},
     "points[0].type: a bit address is of type bool, got uint16"),
    ({"name": "a", "address": "hr:1", "type": "string(0)"}, "points[0].type: invalid length"),
    ({"name": "a", "address": "hr:1", "type": "bool", "scale": 2},
     "points[0].scale: scale applies to numeric types only, not bool"),
    ({"name": "a", "address": "hr:1", "scale": 0}, "points[0].scale: expected a non-zero number"),
    ({"name": "a", "address": "co:1", "order": "CDAB"},
     "points[0].order: order applies to multi-byte register values only"),
    ({"name": "a", "address": "hr:1", "order": "ABDC"}, "points[0].order: unknown value 'ABDC'"),
    ({"name": "a/b", "address": "hr:1"}, "points[0].name: invalid point name 'a/b'"),
    ({"name": "a", "address": "hr:1", "unit_id": 248},
     "points[0].unit_id: expected an integer <= 247, got 248"),
    ({"name": "a", "address": "hr:1", "colour": "red"}, "points[0].colour: unknown key"),
    ({"name": "a", "address": "ir:1", "writable": {"min": 0, "max": 1}},
     "points[0].writable: ir (input registers) are read-only"),
    ({"name": "a", "address": "di:1", "writable": True},
     "points[0].writable: di (discrete inputs) are read-only"),
    ({"name": "a", "address": "hr:1.2", "writable": True},
     "points[0].writable: a bit of a register cannot be written"),
    ({"name": "a", "address": "hr:1", "writable": True},
     "points[0].writable: expected a table { min = ..., max = ... } for a numeric point"),
    ({"name": "a", "address": "hr:1", "writable": {"min": 5}},
     "points[0].writable.max: missing required key"),
    ({"name": "a", "address": "hr:1", "writable": {"min": 5, "max": 1}},
     "points[0].writable: expected finite min <= max, got min = 5, max = 1"),
    ({"name": "a", "address": "hr:1", "writable": "yes"},
     "points[0].writable: expected true or a table"),
    ({"name": "a", "address": "co:1", "writable": {"min": 0}},
     "points[0].writable.min: unknown key"),
])
def test_point_problems(point: dict[str, Any], message: str) -> None:
    msgs = problems_of({"url": "rtu:///dev/ttyUSB0", "points": [point]})
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("gatewayd.toml: devices.boiler.")
    assert message in msgs[0]


@pytest.mark.parametrize(("device", "message"), [
    ({}, "devices.boiler.url: missing required key"),
    ({"url": "tcp://h", "points": []}, "devices.boiler.points: expected at least one point"),
    ({"url": "tcp://h", "poll": "fast"}, "devices.boiler.poll: invalid duration 'fast'"),
    ({"url": "tcp://h", "unit_id": 256}, "devices.boiler.unit_id: expected an integer <= 255"),
    ({"url": "rtu:///dev/x", "unit_id": 0}, "devices.boiler.unit_id: expected an integer >= 1"),
    ({"url": "tcp://h", "max_registers": 126},
     "devices.boiler.max_registers: expected an integer <= 125, got 126"),
    ({"url": "tcp://h", "max_bits": 2001}, "devices.boiler.max_bits: expected an integer <= 2000"),
    ({"url": "tcp://h", "probe_interval": "10s", "probe_interval_max": "5s"},
     "devices.boiler.probe_interval_max: expected at least probe_interval (10s), got 5s"),
    ({"url": "tcp://h", "points": [HR, HR]}, "devices.boiler.points[1].name: duplicate point"),
    ({"url": "tcp://h", "max_registers": 1,
      "points": [{"name": "s", "address": "hr:0", "type": "string(4)"}]},
     "devices.boiler.points[0].type: string(4) needs 2 registers, more than max_registers (1)"),
])
def test_device_problems(device: dict[str, Any], message: str) -> None:
    table = {"points": [HR], **device}
    msgs = problems_of(table)
    assert len(msgs) == 1, msgs
    assert message in msgs[0]


def test_points_are_required() -> None:
    assert problems_of({"url": "tcp://h"}) == [
        "gatewayd.toml: devices.boiler.points: missing required array of tables"]


def test_every_problem_is_reported_at_once() -> None:
    msgs = problems_of({"url": "udp://x", "poll": "x", "points": [
        {"name": "a", "address": "hr:x"}, {"address": "hr:1"}, {"name": "c", "address": "ir:1",
                                                               "type": "float"}]})
    paths = [m.split(": ")[1] for m in msgs]
    assert paths == ["devices.boiler.url", "devices.boiler.poll",
                     "devices.boiler.points[0].address", "devices.boiler.points[1].name",
                     "devices.boiler.points[2].type"]


def test_writable_bool_and_string_points() -> None:
    options, problems = parse({"url": "tcp://h", "points": [
        {"name": "pump", "address": "co:3", "writable": True},
        {"name": "label", "address": "hr:10", "type": "string(8)", "writable": {}},
        {"name": "mode", "address": "hr:1", "type": "bool", "writable": False},
    ]})
    assert problems == []
    assert [p.writable for p in options.points] == [Writable(), Writable(), None]


def test_driver_kind_and_options() -> None:
    assert ModbusDriver.kind == "modbus"
