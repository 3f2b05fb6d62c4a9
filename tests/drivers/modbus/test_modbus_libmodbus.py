"""The driver against a slave that is not pymodbus: libmodbus (C), over TCP and RTU."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.peers.modbus_libmodbus import libmodbus_slave
from tests.peers.modbus_pty import pty_pair

from .conftest import ListSink, make_driver, running, typed_points_and_registers

pytestmark = pytest.mark.timeout(30)


def slave_maps() -> tuple[list[dict[str, Any]], dict[str, Mapping[int, Sequence[int]]],
                          dict[str, Any]]:
    points, registers, expected = typed_points_and_registers()
    points += [
        {"name": "in", "address": "ir:10", "type": "int32", "order": "CDAB", "scale": 0.001},
        {"name": "coil", "address": "co:20"},
        {"name": "input", "address": "di:1999"},
        {"name": "bit", "address": "hr:300.15"},
        {"name": "missing", "address": "hr:999", "type": "uint32"},  # runs past the map
        {"name": "sp", "address": "hr:500", "type": "float32",
         "writable": {"min": 0, "max": 10}},
    ]
    ordered = [registers[a] for a in sorted(registers)]
    maps = {"hr": {0: ordered, 300: [0x8000]}, "ir": {10: [0x2EEA, 0xFFFF]},
            "co": {20: [1]}, "di": {1999: [1]}}
    # ir:10 CDAB int32 0xFFFF2EEA = -53526 -> -53.526
    return points, maps, expected | {"in": -53.526, "coil": True, "input": True, "bit": True,
                                     "sp": 0.0}


async def exercise(slave_binary: Path, tmp_path: Path, transport: list[str], url: str,
                   sink: ListSink) -> None:
    points, maps, expected = slave_maps()
    log = tmp_path / "requests.log"
    async with libmodbus_slave(slave_binary, log, transport, 7, maps) as slave:
        driver = make_driver({"url": url.format(port=slave.port), "unit_id": 7,
                              "poll": "300ms", "timeout": "500ms", "points": points})
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: len(sink.batches) >= 2)
            reads = slave.requests()
            await driver.write("sp", 2.5)
            await sink.wait_for(lambda: sink.latest("dev").get("sp") == 2.5)
            health = driver.health()
    latest = sink.latest("dev")
    assert latest.pop("in") == pytest.approx(-53.526, abs=1e-12)
    assert latest == {k: v for k, v in expected.items() if k != "in"} | {"sp": 2.5}
    assert [(r.function, r.start, r.count) for r in driver.plan] == [
        (1, 20, 1), (2, 1999, 1), (3, 0, 96), (3, 300, 1), (3, 500, 2), (3, 999, 2), (4, 10, 2)]
    assert Counter((u, fc, a, c) for u, fc, a, c in reads) == Counter(
        {(7, r.function, r.start, r.count): 2 for r in driver.plan})
    assert (7, 16, 500, 2) in slave.requests()
    assert health["points"]["missing"]["last_error"] == (
        "unit 7: Modbus exception 2 (illegal data address)")


async def test_libmodbus_over_tcp(slave_binary: Path, tmp_path: Path, sink: ListSink) -> None:
    await exercise(slave_binary, tmp_path, ["tcp", "0"], "tcp://127.0.0.1:{port}", sink)


async def test_libmodbus_over_rtu(slave_binary: Path, tmp_path: Path, sink: ListSink) -> None:
    async with pty_pair(tmp_path) as (master_end, slave_end):
        await exercise(slave_binary, tmp_path, ["rtu", slave_end, "38400", "N"],
                       f"rtu://{master_end}?baudrate=38400&parity=N", sink)

