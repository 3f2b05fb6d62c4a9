"""The driver against a CoAP device made with aiocoap's server side, over UDP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import cbor2
import pytest
from aiocoap.numbers.codes import Code
from gatewayd.drivers.coap.errors import CoapErrorResponse, CoapUnreachable

from gatewayd.errors import DriverError, WriteRefused
from tests.peers.coap_aiocoap import AiocoapDevice

from .conftest import ListSink, make_driver, running, wait_health

pytestmark = pytest.mark.timeout(60)

FAST = {"timeout": "1s", "ack_timeout": "300ms", "retry_delay": "100ms",
        "retry_delay_max": "400ms"}


def device(url: str, resources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"url": url, "poll": "100ms", **FAST, "resources": resources, **extra}


POLLED = [
    {"path": "/number", "name": "number", "unit": "Cel"},
    {"path": "/number", "name": "number_f", "scale": 1.8, "offset": 32},
    {"path": "/env", "name": "temp", "format": "json", "field": "temp", "unit": "Cel"},
    {"path": "/env", "name": "hum", "format": "json", "field": "hum", "unit": "%RH"},
    {"path": "/env", "name": "status", "format": "json", "field": "status"},
    {"path": "/senml", "name": "env", "format": "senml"},
    {"path": "/senml-cbor", "name": "temp_cbor", "format": "senml-cbor", "field": "temp"},
    {"path": "/cbor", "name": "level", "format": "cbor", "field": "level"},
    {"path": "/cbor", "name": "nested", "format": "cbor", "field": "nested.v"},
]
EXPECTED = {
    "number": 21.5, "number_f": 21.5 * 1.8 + 32, "temp": 21.5, "hum": 40, "status": "ok",
    "env.temp": 23.125, "env.hum": 41, "env.door": True, "temp_cbor": 23.125, "level": 7,
    "nested": -2.5,
}


async def test_poll_gives_the_exact_values_of_every_format(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        driver = make_driver(device(dev.url, POLLED))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: sink.latest("dev").keys() == EXPECTED.keys())
            assert sink.latest("dev") == EXPECTED
            dev.set("/number", b" -7 \n")
            dev.set("/env", json.dumps({"temp": -0.25, "hum": 99, "status": "dry"}).encode())
            await sink.wait_for(lambda: sink.latest("dev")["number"] == -7
                                and sink.latest("dev")["status"] == "dry")
            await sink.wait_for(lambda: sink.latest("dev")["temp"] == -0.25)
    latest = sink.latest("dev")
    assert type(latest["number"]) is int and latest["hum"] == 99
    units = {r.point: r.unit for r in sink.readings}
    assert units["number"] == "Cel" and units["env.temp"] == "Cel"
    assert units["env.hum"] == "%RH" and units["temp_cbor"] == "Cel" and units["status"] is None
    # one GET per path and poll: five paths, the three points of /env from one request
    health = driver.health()
    assert health["requests"] == health["polls"]
    assert health["responses"] >= health["polls"] - 5  # cancelled at the end: in flight
    assert set(health["resources"]) == {"/number", "/env", "/senml", "/senml-cbor", "/cbor"}
    assert health["decode_errors"] == {"malformed": 0, "missing_field": 0, "invalid_value": 0}
    assert health["state"] == "stopped"
    assert health["values"]["env.door"]["value"] is True


async def test_observe_delivers_every_notification_in_order(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        driver = make_driver(device(dev.url, [
            {"path": "/counter", "name": "count", "mode": "observe", "type": "number"}]))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: sink.values("dev", "count") == [0])
            await wait_health(driver, lambda h: h["resources"]["/counter"]["observing"])
            await dev.tick(200, every=0.005)
            await sink.wait_for(lambda: len(sink.values("dev", "count")) >= 201)
        rendered = [int(p) for p in dev["/counter"].rendered]
    values = sink.values("dev", "count")
    assert rendered == list(range(201))  # the device sent every increment
    assert values == list(range(201))  # and every one arrived, once, in order
    health = driver.health()
    assert health["registrations"] == 1 and health["notifications"] == 200
    assert health["polls"] == 0 and health["lapses"] == 0
    assert health["dropped_notifications"] == 0


async def test_observation_resumes_after_the_device_restarts(sink: ListSink) -> None:
    async with AiocoapDevice(max_age=1) as dev:
        driver = make_driver(device(dev.url, [
            {"path": "/counter", "name": "count", "mode": "observe"}],
            observe_grace="300ms"))
        async with running(driver, sink=sink):
            await wait_health(driver, lambda h: h["resources"]["/counter"]["observing"])
            await dev.tick(5)
            await sink.wait_for(lambda: sink.values("dev", "count")[-1:] == [5])
            await dev.stop()  # gone without a word, like a power cut
            dev.counter = 1000
            await wait_health(driver, lambda h: h["lapses"] >= 1)
            await dev.start()
            await wait_health(driver, lambda h: h["registrations"] >= 2
                              and h["resources"]["/counter"]["observing"]
                              and dev["/counter"].observers == 1)
            await dev.tick(3)
            await sink.wait_for(lambda: sink.values("dev", "count")[-1:] == [1003])
    values = sink.values("dev", "count")
    assert values[:6] == [0, 1, 2, 3, 4, 5]
    assert values[-3:] == [1001, 1002, 1003]
    assert set(values[6:-3]) <= {5}  # re-registrations before the restart give the value again
    assert driver.health()["lapses"] >= 1


async def test_garbage_is_counted_and_named_and_the_device_keeps_running(
        sink: ListSink, caplog: pytest.LogCaptureFixture) -> None:
    async with AiocoapDevice() as dev:
        driver = make_driver(device(dev.url, [
            {"path": "/env", "name": "temp", "format": "json", "field": "temp"},
            {"path": "/env", "name": "hum", "format": "json", "field": "hum"},
            {"path": "/counter", "name": "count", "mode": "observe"}]))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: sink.latest("dev").get("hum") == 40
                                and sink.values("dev", "count") == [0])
            await wait_health(driver, lambda h: h["resources"]["/counter"]["observing"])
            dev.set("/counter", b"\xff\xfe not a number")
            h = await wait_health(driver, lambda h: h["decode_errors"]["malformed"] == 1)
            assert h["resources"]["/counter"]["last_error_kind"] == "MalformedPayload"
            assert "not UTF-8 text" in h["resources"]["/counter"]["last_error"]
            dev.set("/counter", b"twelve")
            h = await wait_health(driver, lambda h: h["decode_errors"]["invalid_value"] == 1)
            assert h["resources"]["/counter"]["last_error_kind"] == "InvalidValue"
            assert "expected a number, got 'twelve'" in h["resources"]["/counter"]["last_error"]
            dev.set("/env", b'{"temp": 22.5}')  # hum is missing: temp still arrives
            h = await wait_health(driver, lambda h: h["decode_errors"]["missing_field"] >= 1)
            assert h["resources"]["/env"]["last_error_kind"] == "MissingField"
            await sink.wait_for(lambda: sink.latest("dev")["temp"] == 22.5)
            dev.set("/env", b'{"temp": 23.5, "hum": 50')  # cut short
            await wait_health(driver, lambda h: h["decode_errors"]["malformed"] >= 2)
            dev.set("/counter", b"12")
            dev.set("/env", b'{"temp": 24.5, "hum": 51}')
            await sink.wait_for(lambda: sink.values("dev", "count")[-1:] == [12]
                                and sink.latest("dev")["hum"] == 51)
            h = driver.health()
            assert h["resources"]["/env"]["last_error"] is None
            assert h["registrations"] == 1 and h["state"] == "reachable"
    assert sink.values("dev", "count") == [0, 12]
    warnings = [r.getMessage() for r in caplog.records if "bad payload" in r.getMessage()]
    assert any("MalformedPayload" in w for w in warnings)


async def test_a_dead_device_does_not_slow_another(sink: ListSink) -> None:
    """Device "dead" sends to a socket that never answers (its request timeout is
    long); "live" keeps polling while that one request is outstanding."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.setblocking(False)
        dead_url = f"coap://127.0.0.1:{hole.getsockname()[1]}"
        async with AiocoapDevice() as dev:
            live = make_driver(device(dev.url, [{"path": "/number", "name": "n"}]), "live")
            dead = make_driver(device(dead_url, [
                {"path": "/number", "name": "n"},
                {"path": "/counter", "name": "c", "mode": "observe"}],
                poll="100ms", timeout="30s", ack_timeout="20s"), "dead")
            async with running(live, dead, sink=sink):
                loop = asyncio.get_running_loop()
                first = await asyncio.wait_for(loop.sock_recv(hole, 1500), 20)
                assert first[1] in (1,)  # a GET from the dead device's driver
                polls = live.health()["responses"]
                await wait_health(live, lambda h: h["responses"] >= polls + 10)
                dh = dead.health()
                assert dh["responses"] == 0 and dh["timeouts"] == 0  # still waiting
                assert dh["requests"] == 2  # one GET, one registration: no pile-up
                assert dh["state"] == "reachable"  # nothing is known to be wrong yet
    lh = live.health()
    assert lh["timeouts"] == 0 and lh["skipped_polls"] == 0
    assert sink.values("live", "n")[-10:] == [21.5] * 10
    assert sink.values("dead", "n") == []


async def test_an_unreachable_device_backs_off_and_recovers(sink: ListSink) -> None:
    dev = AiocoapDevice()
    live_dev = AiocoapDevice()
    async with live_dev:
        down = make_driver(device(dev.url, [
            {"path": "/number", "name": "n"},
            {"path": "/env", "name": "t", "format": "json", "field": "temp"},
            {"path": "/counter", "name": "c", "mode": "observe"}]), "down")
        live = make_driver(device(live_dev.url, [{"path": "/number", "name": "n"}]), "live")
        async with running(down, live, sink=sink):
            h = await wait_health(down, lambda h: h["consecutive_failures"] >= 3)
            assert h["state"] == "unreachable" and h["network_errors"] >= 3
            # one probe at a time: the three first requests, then one per retry
            assert h["requests"] <= h["consecutive_failures"] + 2
            assert "refused" in (h["last_error"] or "").lower()
            live_before = live.health()["responses"]
            await dev.start()
            h = await wait_health(down, lambda h: h["state"] == "reachable"
                                  and h["resources"]["/counter"]["observing"]
                                  and sink.latest("down").get("t") == 21.5)
            await sink.wait_for(lambda: sink.latest("down").get("n") == 21.5
                                and sink.values("down", "c") == [0])
            await dev.stop()
            assert live.health()["responses"] > live_before
    assert down.health()["timeouts"] == 0  # refused at once (ICMP), never timed out


async def test_error_responses_are_counted_per_resource(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        dev["/env"].code = Code.SERVICE_UNAVAILABLE
        driver = make_driver(device(dev.url, [
            {"path": "/env", "name": "t", "format": "json", "field": "temp"},
            {"path": "/nothing", "name": "x"},
            {"path": "/number", "name": "n"}]))
        async with running(driver, sink=sink):
            h = await wait_health(driver, lambda h: h["resources"]["/nothing"]["errors"] >= 2
                                  and h["resources"]["/env"]["errors"] >= 2)
            assert h["resources"]["/nothing"]["last_error"] == "/nothing: answered 4.04 Not Found"
            assert h["resources"]["/nothing"]["last_error_kind"] == "CoapErrorResponse"
            assert "5.03 Service Unavailable (test says so)" in h["resources"]["/env"]["last_error"]
            assert h["state"] == "reachable" and h["consecutive_failures"] == 0
            dev["/env"].code = Code.CONTENT
            await sink.wait_for(lambda: sink.latest("dev").get("t") == 21.5)
    assert sink.latest("dev") == {"t": 21.5, "n": 21.5}


async def test_writes_put_in_the_resource_format(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        driver = make_driver(device(dev.url, [
            {"path": "/number", "name": "setpoint", "scale": 0.5,
             "writable": {"min": 10, "max": 30}},
            {"path": "/env", "name": "mode", "format": "json", "field": "cfg.mode",
             "type": "string", "writable": True},
            {"path": "/senml", "name": "env", "format": "senml", "mode": "observe"}]))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: "setpoint" in sink.latest("dev"))
            await driver.write("setpoint", 21)
            await driver.write("mode", "eco")
            with pytest.raises(WriteRefused, match=r"out of range \[10, 30\]"):
                await driver.write("setpoint", 31)
            with pytest.raises(WriteRefused, match="not writable"):
                await driver.write("env", 1)
            with pytest.raises(WriteRefused, match="no point"):
                await driver.write("nope", 1)
            dev["/number"].writable = False
            with pytest.raises(CoapErrorResponse, match=r"4\.05 Method Not Allowed") as info:
                await driver.write("setpoint", 22)
            assert info.value.code == "4.05" and info.value.point == "setpoint"
            await sink.wait_for(lambda: sink.latest("dev")["setpoint"] == 21.0)
    assert dev["/number"].puts == [(b"42", 0)]
    assert dev["/env"].puts == [(b'{"cfg":{"mode":"eco"}}', 50)]
    h = driver.health()
    assert (h["writes"], h["writes_refused"], h["write_errors"]) == (3, 3, 1)


async def test_a_write_to_a_silent_device_is_a_driver_error(sink: ListSink) -> None:
    dev = AiocoapDevice()
    driver = make_driver(device(dev.url, [
        {"path": "/number", "name": "n", "mode": "observe", "writable": {"min": 0, "max": 9}}]))
    with pytest.raises(DriverError, match="not running"):
        await driver.write("n", 1)
    async with running(driver, sink=sink):
        await wait_health(driver, lambda h: h["state"] != "stopped")
        with pytest.raises(DriverError, match="write failed") as info:
            await driver.write("n", 1)
        assert isinstance(info.value.__cause__, CoapUnreachable)
    assert driver.health()["write_errors"] == 1


async def test_cbor_payloads_round_trip_through_writes(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        dev["/cbor"].writable = True
        driver = make_driver(device(dev.url, [
            {"path": "/cbor", "name": "level", "format": "cbor", "field": "level",
             "writable": {"min": 0, "max": 100}}]))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: sink.latest("dev").get("level") == 7)
            await driver.write("level", 55)
            await sink.wait_for(lambda: sink.latest("dev").get("level") == 55)
    assert [cbor2.loads(p) for p, _ in dev["/cbor"].puts] == [{"level": 55}]


async def test_a_resource_that_cannot_be_observed_is_read_when_stale(sink: ListSink) -> None:
    async with AiocoapDevice() as dev:
        driver = make_driver(device(dev.url, [
            {"path": "/plain", "name": "p", "mode": "observe"}]))
        async with running(driver, sink=sink):
            await sink.wait_for(lambda: sink.values("dev", "p") == [5])
            dev.plain.payload = b"6"
            await sink.wait_for(lambda: sink.values("dev", "p") == [5, 6])  # Max-Age 1 s later
    h = driver.health()
    assert h["not_observable"] == 2 and h["registrations"] == 2 and dev.plain.gets == 2
    assert not h["resources"]["/plain"]["observing"]
