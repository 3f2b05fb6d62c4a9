"""Read planning: merging into the fewest requests, limits, gaps, and the text form."""

from __future__ import annotations

import re
from typing import Any

from gatewayd.drivers.modbus.plan import ReadRequest, build_plan, format_plan

from .conftest import parse


def plan_of(points: list[dict[str, Any]], **device: Any) -> tuple[ReadRequest, ...]:
    options, problems = parse({"url": "tcp://127.0.0.1:502", "points": points, **device})
    assert problems == []
    return build_plan(options)


def summary(plan: tuple[ReadRequest, ...]) -> list[tuple[int, str, int, int, tuple[str, ...]]]:
    return [(r.unit, r.space, r.start, r.count, r.points) for r in plan]


def test_adjacent_and_overlapping_points_merge_into_one_request() -> None:
    plan = plan_of([
        {"name": "t", "address": "hr:100", "type": "float32"},
        {"name": "p", "address": "hr:102", "type": "uint16"},
        {"name": "flag", "address": "hr:102.3"},
        {"name": "e", "address": "hr:103", "type": "int64"},
    ])
    assert summary(plan) == [(1, "hr", 100, 7, ("t", "p", "flag", "e"))]


def test_gaps_up_to_max_gap_are_bridged_and_larger_ones_split() -> None:
    points = [{"name": "a", "address": "hr:0"}, {"name": "b", "address": "hr:11"},
              {"name": "c", "address": "hr:23"}]
    # gap a..b is 10 registers (1..10): bridged; gap b..c is 11: split
    assert summary(plan_of(points)) == [(1, "hr", 0, 12, ("a", "b")), (1, "hr", 23, 1, ("c",))]
    assert summary(plan_of(points, max_gap=0)) == [
        (1, "hr", 0, 1, ("a",)), (1, "hr", 11, 1, ("b",)), (1, "hr", 23, 1, ("c",))]
    assert summary(plan_of(points, max_gap=11)) == [(1, "hr", 0, 24, ("a", "b", "c"))]


def test_requests_never_exceed_max_registers() -> None:
    points = [{"name": f"p{i}", "address": f"ir:{i * 2}", "type": "float32"}
              for i in range(100)]  # 200 registers
    plan = plan_of(points)
    assert [(r.start, r.count) for r in plan] == [(0, 124), (124, 76)]
    assert [r.count for r in plan_of(points, max_registers=50)] == [50, 50, 50, 50]


def test_bits_merge_up_to_2000_and_max_bit_gap() -> None:
    points = [{"name": f"c{i}", "address": f"co:{i * 100}"} for i in range(25)]  # 0..2400
    plan = plan_of(points, max_bit_gap=100)
    assert [(r.space, r.start, r.count) for r in plan] == [("co", 0, 1901), ("co", 2000, 401)]
    assert len(plan_of(points)) == 2  # every gap is 99 bits: within the default 160
    assert len(plan_of(points, max_bit_gap=98)) == 25
    assert [r.count for r in plan_of(points, max_bits=500)] == [401] * 5


def test_spaces_units_and_poll_intervals_never_share_a_request() -> None:
    plan = plan_of([
        {"name": "a", "address": "hr:0"},
        {"name": "b", "address": "ir:1"},
        {"name": "c", "address": "hr:1", "unit_id": 2},
        {"name": "d", "address": "hr:2", "poll": "10s"},
        {"name": "e", "address": "di:0"},
        {"name": "f", "address": "co:0"},
    ], poll="1s")
    assert [(r.poll, r.unit, r.function, r.start, r.points) for r in plan] == [
        (1.0, 1, 1, 0, ("f",)), (1.0, 1, 2, 0, ("e",)), (1.0, 1, 3, 0, ("a",)),
        (1.0, 1, 4, 1, ("b",)), (1.0, 2, 3, 1, ("c",)), (10.0, 1, 3, 2, ("d",)),
    ]


def test_format_plan_prints_one_line_per_request() -> None:
    options, _ = parse({"url": "rtu:///dev/ttyUSB0?baudrate=9600&parity=E", "unit_id": 3,
                        "poll": "5s", "points": [
                            {"name": "flow_temp", "address": "hr:100", "type": "float32",
                             "order": "CDAB"},
                            {"name": "pressure", "address": "ir:7", "scale": 0.01},
                            {"name": "pump_on", "address": "hr:300.2"},
                            {"name": "setpoint", "address": "hr:102", "type": "int16"},
                            {"name": "alarm", "address": "co:5", "poll": "500ms"},
                        ]})
    assert format_plan(options) == (
        "rtu:///dev/ttyUSB0?baudrate=9600&parity=E&stopbits=1&bytesize=8\n"
        "UNIT  FC  FUNCTION                START  COUNT  EVERY  POINTS\n"
        "3     1   read coils              5      1      500ms  alarm\n"
        "3     3   read holding registers  100    3      5s     flow_temp, setpoint\n"
        "3     3   read holding registers  300    1      5s     pump_on\n"
        "3     4   read input registers    7      1      5s     pressure\n"
        "4 requests for 5 points (1 every 500ms, 3 every 5s)\n"
    )


def _write_config(tmp_path: Any) -> Any:
    path = tmp_path / "gatewayd.toml"
    path.write_text(
        '[gateway]\nid = "gw-plan"\nstate_dir = "state"\nruntime_dir = "run"\n'
        '[devices.boiler]\ndriver = "modbus"\nurl = "tcp://127.0.0.1:1502"\nunit_id = 3\n'
        'poll = "5s"\npoints = [\n'
        '  { name = "flow_temp", address = "hr:100", type = "float32", order = "CDAB" },\n'
        '  { name = "setpoint", address = "hr:104", type = "int16" },\n'
        '  { name = "pressure", address = "ir:7", type = "uint16", scale = 0.01 },\n]\n'
        '[devices.demo]\ndriver = "sim"\npoints = [{ name = "c", signal = "counter" }]\n')
    return path


def test_gatewayctl_modbus_plan_prints_the_requests(tmp_path: Any, capsys: Any) -> None:
    from gatewayd.cli.ctl import main

    config = _write_config(tmp_path)
    assert main(["modbus", "plan", "boiler", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tcp://127.0.0.1:1502"
    cells = [re.split(r"\s{2,}", line) for line in out[1:4]]
    assert cells == [
        ["UNIT", "FC", "FUNCTION", "START", "COUNT", "EVERY", "POINTS"],
        ["3", "3", "read holding registers", "100", "5", "5s", "flow_temp, setpoint"],
        ["3", "4", "read input registers", "7", "1", "5s", "pressure"],
    ]
    assert out[4] == "2 requests for 3 points (2 every 5s)"

    assert main(["modbus", "plan", "boiler", "--json", "--config", str(config)]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert [(r["space"], r["start"], r["count"]) for r in doc["requests"]] == [
        ("hr", 100, 5), ("ir", 7, 1)]


def test_gatewayctl_modbus_plan_names_a_wrong_device(tmp_path: Any, capsys: Any) -> None:
    from gatewayd.cli.ctl import main

    config = _write_config(tmp_path)
    assert main(["modbus", "plan", "nope", "--config", str(config)]) == 1
    assert "no device 'nope' in the configuration; Modbus devices: boiler" in \
        capsys.readouterr().err
    assert main(["modbus", "plan", "demo", "--config", str(config)]) == 1
    assert "device 'demo' uses driver 'sim', not modbus" in capsys.readouterr().err
