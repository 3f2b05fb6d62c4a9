"""Fixtures of the modbus driver tests: option parsing, a collecting sink, running drivers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gatewayd.drivers.modbus.config import ModbusOptions
from gatewayd.drivers.modbus.driver import ModbusDriver

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.driver import DeviceConfig
from gatewayd.errors import ConfigProblem
from tests.support.sink import ListSink


def parse(table: dict[str, Any], name: str = "dev") -> tuple[ModbusOptions, list[ConfigProblem]]:
    problems = Problems(Origins("gatewayd.toml"))
    section = Section(table, f"devices.{name}", problems)
    options = ModbusDriver.parse_options(section)
    section.done()
    return options, problems.items


def make_driver(table: dict[str, Any], name: str = "dev") -> ModbusDriver:
    options, problems = parse(table, name)
    assert problems == []
    return ModbusDriver(DeviceConfig(name=name, driver="modbus", priority=0, enabled=True,
                                     options=options))


@asynccontextmanager
async def running(*drivers: ModbusDriver, sink: ListSink) -> AsyncIterator[None]:
    """Run the drivers as tasks for the body of the ``async with``, then cancel them."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(sink)) for d in drivers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture(scope="session")
def slave_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.peers.modbus_libmodbus import SlaveUnavailable, build_slave

    try:
        return build_slave(tmp_path_factory.mktemp("libmodbus"))
    except SlaveUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"libmodbus slave: {err}")
        pytest.skip(f"libmodbus slave: {err}")


async def wait_health(driver: ModbusDriver, predicate: Callable[[dict[str, Any]], bool],
                      within: float = 10.0) -> dict[str, Any]:
    """Return the driver's health once ``predicate`` holds; fail after ``within`` s.
    Health has no event to await (it changes while no reading is submitted, e.g.
    while disconnected), so it is looked at every 20 ms."""
    async with asyncio.timeout(within):
        while not predicate(health := driver.health()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return health


def words(big_endian: bytes, order: str) -> list[int]:
    """Registers carrying ``big_endian`` in ``order`` (written apart from the codec)."""
    pairs = [big_endian[i:i + 2] for i in range(0, len(big_endian), 2)]
    if order in ("CDAB", "DCBA"):
        pairs = pairs[::-1]
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    return [int.from_bytes(p, "big") for p in pairs]


# (type, exact value, its big-endian bytes): one point per type and order on the slaves
TYPE_CASES: list[tuple[str, Any, bytes]] = [
    ("int16", -12345, (-12345).to_bytes(2, "big", signed=True)),
    ("uint16", 54321, (54321).to_bytes(2, "big")),
    ("int32", -1234567890, (-1234567890).to_bytes(4, "big", signed=True)),
    ("uint32", 3456789012, (3456789012).to_bytes(4, "big")),
    ("int64", -1234567890123456789, (-1234567890123456789).to_bytes(8, "big", signed=True)),
    ("uint64", 12345678901234567890, (12345678901234567890).to_bytes(8, "big")),
    ("float32", 12.375, bytes.fromhex("41460000")),
    ("float64", -0.1, bytes.fromhex("bfb999999999999a")),
    ("string(7)", "Modbus!", b"Modbus!\x00"),
]
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def typed_points_and_registers() -> tuple[list[dict[str, Any]], dict[int, int], dict[str, Any]]:
    """Points of every type in every order from hr:0 up (4 registers apart at most), the
    holding registers that carry them, and the exact values expected."""
    points: list[dict[str, Any]] = []
    registers: dict[int, int] = {}
    expected: dict[str, Any] = {}
    address = 0
    for type_name, value, data in TYPE_CASES:
        for order in ORDERS:
            name = f"{type_name.split('(')[0]}_{order}"
            points.append({"name": name, "address": f"hr:{address}", "type": type_name,
                           "order": order})
            for i, word in enumerate(words(data, order)):
                registers[address + i] = word
            expected[name] = value
            address += len(data) // 2
    return points, registers, expected
