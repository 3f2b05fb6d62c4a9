"""Fixtures of the coap driver tests: option parsing, a collecting sink, running drivers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from gatewayd.drivers.coap.config import CoapOptions
from gatewayd.drivers.coap.driver import CoapDriver

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.driver import DeviceConfig
from gatewayd.errors import ConfigProblem
from tests.support.sink import ListSink


def parse(table: dict[str, Any], name: str = "dev") -> tuple[CoapOptions, list[ConfigProblem]]:
    problems = Problems(Origins("gatewayd.toml"))
    section = Section(table, f"devices.{name}", problems)
    options = CoapDriver.parse_options(section)
    section.done()
    return options, problems.items


def make_driver(table: dict[str, Any], name: str = "dev") -> CoapDriver:
    options, problems = parse(table, name)
    assert problems == [], problems
    return CoapDriver(DeviceConfig(name=name, driver="coap", priority=0, enabled=True,
                                   options=options))


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@asynccontextmanager
async def running(*drivers: CoapDriver, sink: ListSink) -> AsyncIterator[None]:
    """Run the drivers as tasks for the body of the ``async with``, then cancel them."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(sink)) for d in drivers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


async def wait_health(driver: CoapDriver, predicate: Callable[[dict[str, Any]], bool],
                      within: float = 20.0) -> dict[str, Any]:
    """The driver's health once ``predicate`` holds on it (checked on every change)."""
    async with asyncio.timeout(within):
        await driver.wait_until(lambda d: predicate(d.health()))
    return driver.health()
