"""The driver against libcoap's server from Debian (coap-server-notls), with libcoap's
coap-client-notls putting values and reading back what the driver wrote."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.coap_libcoap import LibcoapServer

from .conftest import ListSink, make_driver, running, wait_health

pytestmark = pytest.mark.timeout(90)

FAST = {"timeout": "1s", "ack_timeout": "300ms", "retry_delay": "100ms",
        "retry_delay_max": "500ms"}


@pytest.fixture
def libcoap() -> Iterator[LibcoapServer]:
    with LibcoapServer() as server:
        yield server


def device(url: str, resources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"url": url, "poll": "100ms", **FAST, "resources": resources, **extra}


async def put(server: LibcoapServer, path: str, payload: str) -> None:
    """PUT with coap-client off the event loop (the driver keeps running meanwhile)."""
    await asyncio.to_thread(server.put, path, payload)


async def test_poll_gives_the_exact_values(libcoap: LibcoapServer, sink: ListSink) -> None:
    await put(libcoap, "/sensors/temp", "21.5")
    await put(libcoap, "/sensors/env", json.dumps({"temp": 19.25, "hum": 55, "ok": True}))
    driver = make_driver(device(libcoap.url, [
        {"path": "/sensors/temp", "name": "temp", "unit": "Cel"},
        {"path": "/sensors/env", "name": "env_temp", "format": "json", "field": "temp"},
        {"path": "/sensors/env", "name": "ok", "format": "json", "field": "ok"},
        {"path": "/time?ticks", "name": "ticks", "poll": "200ms"},
    ]))
    async with running(driver, sink=sink):
        await sink.wait_for(lambda: len(sink.latest("dev")) == 4)
        assert {k: v for k, v in sink.latest("dev").items() if k != "ticks"} == {
            "temp": 21.5, "env_temp": 19.25, "ok": True}
        assert abs(sink.latest("dev")["ticks"] - time.time()) < 30
        assert type(sink.latest("dev")["ticks"]) is int
        for value in ("22", "-3.75", "1e3"):
            await put(libcoap, "/sensors/temp", value)
            await sink.wait_for(lambda v=value: sink.latest("dev")["temp"] == float(v))
    assert sink.values("dev", "temp")[-1] == 1000.0
    seen = []
    for v in sink.values("dev", "temp"):
        if not seen or seen[-1] != v:
            seen.append(v)
    assert seen == [21.5, 22, -3.75, 1000.0]  # each value exactly, in the order put
    h = driver.health()
    assert h["error_responses"] == 0 and h["timeouts"] == 0
    assert h["decode_errors"] == {"malformed": 0, "missing_field": 0, "invalid_value": 0}


async def test_observe_delivers_every_put_in_order(libcoap: LibcoapServer,
                                                   sink: ListSink) -> None:
    await put(libcoap, "/count", "0")
    driver = make_driver(device(libcoap.url, [
        {"path": "/count", "name": "count", "mode": "observe"}]))
    async with running(driver, sink=sink):
        await wait_health(driver, lambda h: h["resources"]["/count"]["observing"])
        for i in range(1, 21):
            await put(libcoap, "/count", str(i))
        await sink.wait_for(lambda: sink.values("dev", "count")[-1:] == [20])
    assert sink.values("dev", "count") == list(range(21))
    h = driver.health()
    assert (h["registrations"], h["notifications"], h["polls"]) == (1, 20, 0)


async def test_observation_resumes_after_kill_and_restart(libcoap: LibcoapServer,
                                                          sink: ListSink) -> None:
    """/time?ticks notifies every second with Max-Age 1: after SIGKILL nothing
    arrives, the observation lapses, and the driver registers again with the new
    server process (while it is down, registrations back off)."""
    driver = make_driver(device(libcoap.url, [
        {"path": "/time?ticks", "name": "ticks", "mode": "observe"}],
        observe_grace="500ms"))
    async with running(driver, sink=sink):
        await sink.wait_for(lambda: len(sink.values("dev", "ticks")) >= 2)
        await asyncio.to_thread(libcoap.kill)
        before = sink.values("dev", "ticks")[-1]
        count = len(sink.values("dev", "ticks"))
        h = await wait_health(driver, lambda h: h["lapses"] >= 1
                              and h["consecutive_failures"] >= 1)
        assert h["state"] == "unreachable" and h["network_errors"] >= 1
        await asyncio.to_thread(libcoap.start)
        await sink.wait_for(lambda: len(sink.values("dev", "ticks")) >= count + 2)
        h = await wait_health(driver, lambda h: h["resources"]["/time?ticks"]["observing"])
    after = sink.values("dev", "ticks")[count:]
    assert all(a >= before for a in after)
    assert after == sorted(after)
    assert h["registrations"] >= 2 and h["state"] == "reachable"
    assert libcoap.starts == 2


async def test_a_resource_gone_after_restart_is_observed_once_it_exists_again(
        libcoap: LibcoapServer, sink: ListSink) -> None:
    """libcoap's created resources carry no Max-Age (60 s by default): with
    observe_refresh the driver registers again every 300 ms, so it learns of
    the restart (4.04: the resource is gone) and observes the new one."""
    await put(libcoap, "/level", "5")
    driver = make_driver(device(libcoap.url, [
        {"path": "/level", "name": "level", "mode": "observe", "type": "number"}],
        observe_refresh="300ms"))
    async with running(driver, sink=sink):
        await sink.wait_for(lambda: sink.values("dev", "level") == [5])
        await asyncio.to_thread(libcoap.restart)  # dynamic resources are gone with it
        h = await wait_health(driver, lambda h: h["resources"]["/level"]["last_error"] ==
                              "/level: answered 4.04 Not Found")
        await put(libcoap, "/level", "6")
        await sink.wait_for(lambda: sink.values("dev", "level")[-1:] == [6])
        await wait_health(driver, lambda h: h["resources"]["/level"]["observing"])
        await put(libcoap, "/level", "7")
        await sink.wait_for(lambda: sink.values("dev", "level")[-1:] == [7])
    values = sink.values("dev", "level")
    assert values[0] == 5 and values[-2:] == [6, 7] and set(values) == {5, 6, 7}
    h = driver.health()
    assert h["error_responses"] >= 1 and h["refreshes"] >= 1 and h["lapses"] == 0


async def test_writes_reach_libcoap(libcoap: LibcoapServer, sink: ListSink) -> None:
    await put(libcoap, "/setpoint", "20")
    await put(libcoap, "/config", json.dumps({"mode": "auto"}))
    driver = make_driver(device(libcoap.url, [
        {"path": "/setpoint", "name": "setpoint", "writable": {"min": 5, "max": 30}},
        {"path": "/config", "name": "mode", "format": "json", "field": "mode",
         "type": "string", "writable": True, "mode": "observe"}]))
    async with running(driver, sink=sink):
        await sink.wait_for(lambda: sink.latest("dev") == {"setpoint": 20, "mode": "auto"})
        await driver.write("setpoint", 22.5)
        await driver.write("mode", "eco")
        assert await asyncio.to_thread(libcoap.get, "/setpoint") == b"22.5"
        assert await asyncio.to_thread(libcoap.get, "/config") == b'{"mode":"eco"}'
        await sink.wait_for(lambda: sink.latest("dev") == {"setpoint": 22.5, "mode": "eco"})
    assert driver.health()["writes"] == 2
