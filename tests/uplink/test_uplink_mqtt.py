"""MqttUplink against a real Mosquitto on loopback, with the durable buffer in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd import senml
from gatewayd.config.schema import IdentityConfig
from gatewayd.reading import Reading
from gatewayd.uplink.config import AuthConfig, UplinkConfig
from gatewayd.uplink.mqtt import MqttUplink
from tests.peers.mosquitto import Mosquitto, Received, Subscriber, free_port
from tests.peers.pki import Pki
from tests.uplink.helpers import GATEWAY, USERS, Store, running, uplink_config
from tests.uplink.proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

TELEMETRY = f"gateways/{GATEWAY}/telemetry"
STATUS = f"gateways/{GATEWAY}/status"
WAIT = 20.0  # the bound of every wait on the broker or the uplink
POINTS = [("boiler", "flow_temp"), ("boiler", "pressure"), ("air", "co2"), ("door", "open")]


def make_readings(n: int, *, start: int = 0) -> list[Reading]:
    """``n`` readings over four points, every value distinct and typed by point."""
    t0 = time.time_ns()
    out = []
    for i in range(start, start + n):
        device, point = POINTS[i % len(POINTS)]
        value: Any = {"flow_temp": i + 0.25, "pressure": i, "co2": f"v{i}",
                      "open": i % 3 == 0}[point]
        out.append(Reading(device, point, value, "Cel" if point == "flow_temp" else None,
                           t0 + i * 1_000_000))  # 1 ms apart: a reading's identity
    return out


def received_readings(messages: list[Received], fmt: str = "json") -> list[Reading]:
    return [r for m in messages if m.topic == TELEMETRY for r in senml.decode(m.payload, fmt=fmt)]


def per_point(readings: list[Reading]) -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in readings:
        out[(r.device, r.point)].append(r.value)
    return dict(out)


def first_occurrences(readings: list[Reading]) -> list[Reading]:
    """Without the duplicates a reconnect may cause (same point, same millisecond)."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for r in readings:
        key = (r.device, r.point, round(r.time / 1e6))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def has_readings(count: int, fmt: str = "json") -> Callable[[list[Received]], bool]:
    return lambda msgs: len(received_readings(msgs, fmt)) >= count


def make_uplink(cfg: UplinkConfig, store: Store, identity: IdentityConfig) -> MqttUplink:
    return MqttUplink(cfg, buffer=store.buffer, gateway_id=GATEWAY, identity=identity,
                      version="9.9.9", boot_time=1_800_000_000.0)


async def watch(uplink: MqttUplink,
                predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Wait (at most WAIT s) until the uplink's health satisfies ``predicate``."""
    try:
        async with asyncio.timeout(WAIT):
            return await uplink.watch(predicate)
    except TimeoutError:
        raise AssertionError(f"health never matched; last: {uplink.health()}") from None


async def arrived(sub: Subscriber,
                  predicate: Callable[[list[Received]], bool]) -> list[Received]:
    """Wait (at most WAIT s) until the messages received satisfy ``predicate``."""
    try:
        async with asyncio.timeout(WAIT):
            return await sub.until(lambda s: predicate(s.messages))
    except TimeoutError:
        raise AssertionError(f"not received in {WAIT}s: {len(sub.snapshot())} messages, "
                             f"{len(received_readings(sub.snapshot()))} readings") from None


async def subscribed(sub: Subscriber, count: int) -> None:
    async with asyncio.timeout(WAIT):
        await sub.until(lambda s: s.subscriptions >= count)


# ------------------------------------------------------------------ steady flow


@pytest.mark.parametrize("variant", ["mqtt", "mqtts", "ws", "wss", "mqtt-v5", "mqtt-cbor"])
async def test_steady_flow_every_reading_arrives_once_in_order(
        variant: str, broker: Mosquitto, pki: Pki, identity: IdentityConfig,
        make_store: Callable[..., Any]) -> None:
    variants: dict[str, tuple[str, dict[str, Any]]] = {
        "mqtt": (f"mqtt://127.0.0.1:{broker.port}", {}),
        "mqtts": (f"mqtts://localhost:{broker.tls_port}", {"ca_file": pki.ca}),
        "ws": (f"ws://127.0.0.1:{broker.ws_port}/mqtt", {}),
        "wss": (f"wss://localhost:{broker.wss_port}/mqtt", {"ca_file": pki.ca}),
        "mqtt-v5": (f"mqtt://127.0.0.1:{broker.port}", {"protocol": "5"}),
        "mqtt-cbor": (f"mqtt://127.0.0.1:{broker.port}", {"format": "cbor"}),
    }
    url, extra = variants[variant]
    fmt = "cbor" if variant == "mqtt-cbor" else "json"
    cfg = uplink_config(url, max_records=200, max_bytes=8192, max_inflight=4, **extra)
    store = await make_store(("cloud",))
    uplink = make_uplink(cfg, store, identity)
    expected = make_readings(6000)
    with Subscriber(broker.port, TELEMETRY) as sub:
        async with running(uplink):
            for i in range(0, len(expected), 300):  # produced while the uplink runs
                await store.add(expected[i:i + 300])
            msgs = await arrived(sub, has_readings(len(expected), fmt))
            health = await watch(uplink, lambda h: h["cursor"] == store.last_id())
    got = received_readings(msgs, fmt)
    assert len(got) == len(expected)  # exactly once
    assert per_point(got) == per_point(expected)  # exact values, per-point order
    assert [r.unit for r in got] == [r.unit for r in expected]
    assert all(len(m.payload) <= 8192 for m in msgs)
    assert health["acked_readings"] == health["published_readings"] == len(expected)
    assert (health["connects"], health["disconnects"], health["last_error"]) == (1, 0, None)
    assert health["state"] == "connected" and health["inflight"] == 0


async def test_batches_wait_up_to_max_delay_to_fill(broker: Mosquitto, identity: IdentityConfig,
                                                    make_store: Callable[..., Any]) -> None:
    cfg = uplink_config(f"mqtt://127.0.0.1:{broker.port}", max_records=100, max_delay=2.0)
    store = await make_store(("cloud",))
    uplink = make_uplink(cfg, store, identity)
    readings = make_readings(150)
    with Subscriber(broker.port, TELEMETRY) as sub:
        async with running(uplink):
            await watch(uplink, lambda h: h["connected"])
            for r in readings:  # one commit each, all within max_delay of the first
                await store.add([r])
            msgs = await arrived(sub, has_readings(150))
    # 100 (full batch) + 50 (the rest, once the oldest is max_delay old): not 150 messages.
    assert [len(senml.decode(m.payload)) for m in msgs] == [100, 50]


async def test_a_backlog_is_read_ahead_but_packed_max_records_at_a_time(
        broker: Mosquitto, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    cfg = uplink_config(f"mqtt://127.0.0.1:{broker.port}", max_records=3, max_inflight=64)
    store = await make_store(("cloud",))
    expected = make_readings(3000)
    await store.add(expected)  # a backlog before the uplink starts: read 2000 rows at a time
    uplink = make_uplink(cfg, store, identity)
    with Subscriber(broker.port, TELEMETRY) as sub:
        async with running(uplink):
            msgs = await arrived(sub, has_readings(len(expected)))
            health = await watch(uplink, lambda h: h["cursor"] == store.last_id())
    assert [len(senml.decode(m.payload)) for m in msgs] == [3] * 1000
    assert per_point(received_readings(msgs)) == per_point(expected)
    assert health["published_batches"] == 1000


# ------------------------------------------------------------------ outages


async def test_broker_restart_everything_produced_meanwhile_arrives(
        broker: Mosquitto, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    first, during, after = make_readings(1000), make_readings(3000, start=1000), \
        make_readings(500, start=4000)
    async with TcpProxy(broker.port) as proxy:
        cfg = uplink_config(f"mqtt://127.0.0.1:{proxy.port}", max_records=250)
        uplink = make_uplink(cfg, store, identity)
        with Subscriber(broker.port, TELEMETRY) as sub:
            async with running(uplink):
                await store.add(first)
                await arrived(sub, has_readings(1000))
                await watch(uplink, lambda h: h["cursor"] == store.last_id())
                acked = store.last_id()

                await broker.astop()
                await watch(uplink, lambda h: h["disconnects"] == 1)
                await store.add(during)  # produced while the broker is down
                await watch(uplink, lambda h: h["connect_attempts"] >= 3)
                assert uplink.health()["cursor"] == acked  # nothing acknowledged meanwhile
                assert not uplink.health()["connected"]

                # Broker back; the subscriber resubscribes before the uplink may reconnect.
                await proxy.pause()
                await broker.astart()
                await subscribed(sub, 2)
                await proxy.resume()
                await store.add(after)
                msgs = await arrived(
                    sub, lambda m: len(first_occurrences(received_readings(m))) >= 4500)
                health = await watch(uplink, lambda h: h["cursor"] == store.last_id())
    got = first_occurrences(received_readings(msgs))
    assert per_point(got) == per_point(first + during + after)  # none lost, order kept
    assert health["connects"] == 2
    assert health["last_error"] is not None


async def test_clean_stop_while_the_broker_is_unreachable(identity: IdentityConfig,
                                                          make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    uplink = make_uplink(uplink_config(f"mqtt://127.0.0.1:{free_port()}", backoff_initial=5.0,
                                       backoff_max=5.0), store, identity)
    async with running(uplink):
        health = await watch(uplink, lambda h: h["state"] == "backoff")
        assert 0 < health["next_retry_in_s"] <= 5.0
    assert uplink.health()["state"] == "stopped"


# ------------------------------------------------------------------ refusals


async def test_wrong_ca_is_refused_reported_and_retried_with_backoff(
        broker: Mosquitto, pki: Pki, identity: IdentityConfig, make_store: Callable[..., Any],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd")
    store = await make_store(("cloud",))
    await store.add(make_readings(10))
    cfg = uplink_config(f"mqtts://127.0.0.1:{broker.tls_port}", ca_file=pki.other_ca)
    uplink = make_uplink(cfg, store, identity)
    async with running(uplink):
        health = await watch(uplink, lambda h: h["connect_attempts"] >= 3
                             and h["state"] == "backoff")
    assert health["last_error"] == ("TLS: certificate verify failed: "
                                    "self-signed certificate in certificate chain")
    assert health["connects"] == 0 and health["cursor"] == 0
    assert health["last_error_at"] is not None and health["last_error_at"].endswith("Z")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 3
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)
    assert warnings[0].getMessage().startswith(f"uplink cloud: {health['last_error']}; "
                                               "retrying in ")


async def test_the_broker_hostname_is_checked(broker: Mosquitto, pki: Pki,
                                             identity: IdentityConfig,
                                             make_store: Callable[..., Any]) -> None:
    # "127.1" reaches 127.0.0.1 but is not a name the server certificate carries.
    store = await make_store(("cloud",))
    cfg = uplink_config(f"mqtts://127.1:{broker.tls_port}", ca_file=pki.ca)
    uplink = make_uplink(cfg, store, identity)
    async with running(uplink):
        health = await watch(uplink, lambda h: h["connect_attempts"] >= 2)
    assert health["last_error"] == ("TLS: certificate verify failed: "
                                    "Hostname mismatch, certificate is not valid for '127.1'.")


@pytest.mark.parametrize("client", ["other-ca", "none"])
async def test_wrong_client_certificate_is_refused(
        client: str, broker: Mosquitto, pki: Pki, identity: IdentityConfig,
        make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    if client == "other-ca":
        auth = AuthConfig(type="mtls", cert_file=pki.other_client.cert,
                          key_file=pki.other_client.key)
        reason = "tlsv1 alert unknown ca"
    else:  # a TLS uplink without mtls: no certificate at all
        auth = AuthConfig(type="none")
        reason = "tlsv13 alert certificate required"
    cfg = uplink_config(f"mqtts://127.0.0.1:{broker.mtls_port}", ca_file=pki.ca, auth=auth)
    uplink = make_uplink(cfg, store, identity)
    async with running(uplink):
        health = await watch(uplink, lambda h: h["connect_attempts"] >= 2
                             and h["state"] == "backoff")
    assert health["connects"] == 0
    assert health["last_error"] == f"connection closed before CONNACK: {reason}"


async def test_mtls_with_the_gateway_identity_and_a_certificate_installed_later(
        broker: Mosquitto, pki: Pki, tmp_path: Path, make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    await store.add(make_readings(20))
    identity = IdentityConfig(key_file=tmp_path / "gateway.key", cert_file=tmp_path / "gw.crt")
    shutil.copy(pki.client.key, identity.key_file)
    cfg = uplink_config(f"mqtts://127.0.0.1:{broker.mtls_port}", ca_file=pki.ca,
                        auth=AuthConfig(type="mtls"))
    uplink = make_uplink(cfg, store, identity)
    with Subscriber(broker.port, TELEMETRY) as sub:
        async with running(uplink):
            health = await watch(uplink, lambda h: h["connect_attempts"] >= 2)
            assert health["last_error"] == (f"cannot read certificate {identity.cert_file}: "
                                            "No such file or directory")
            shutil.copy(pki.client.cert, identity.cert_file)  # the operator installs it
            await watch(uplink, lambda h: h["cursor"] == store.last_id())
            msgs = await arrived(sub, has_readings(20))
    assert len(received_readings(msgs)) == 20


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_password_auth_right_and_wrong(protocol: str, broker: Mosquitto, tmp_path: Path,
                                             identity: IdentityConfig,
                                             make_store: Callable[..., Any]) -> None:
    store = await make_store(("good", "bad"))
    await store.add(make_readings(40))
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(USERS["gw-user"] + "\n")
    wrong.write_text("not-the-password")
    url = f"mqtt://127.0.0.1:{broker.password_port}"
    good = make_uplink(uplink_config(url, name="good", protocol=protocol, auth=AuthConfig(
        type="password", username="gw-user", password_file=right)), store, identity)
    bad = make_uplink(uplink_config(url, name="bad", protocol=protocol, auth=AuthConfig(
        type="password", username="gw-user", password_file=wrong)), store, identity)
    async with running(good, bad):
        await watch(good, lambda h: h["cursor"] == store.last_id())
        health = await watch(bad, lambda h: h["connect_attempts"] >= 2
                             and h["state"] == "backoff")
    assert health["last_error"] == "broker refused the connection: Not authorized"
    assert health["cursor"] == 0 and health["connects"] == 0
    assert "not-the-password" not in json.dumps(health)


async def test_a_publish_the_broker_refuses_is_not_acknowledged(
        tmp_path: Path, pki: Pki, identity: IdentityConfig,
        make_store: Callable[..., Any]) -> None:
    acl = ("user gw-user\ntopic readwrite #\n"
           f"user gw-limited\ntopic readwrite gateways/{GATEWAY}/status\n")
    users = {**USERS, "gw-limited": "limited-pass"}
    pw = tmp_path / "pw"
    pw.write_text("limited-pass")
    store = await make_store(("cloud",))
    await store.add(make_readings(10))
    with Mosquitto(tmp_path / "acl-broker", users=users, acl=acl) as broker:
        cfg = uplink_config(f"mqtt://127.0.0.1:{broker.password_port}", protocol="5",
                            auth=AuthConfig(type="password", username="gw-limited",
                                            password_file=pw))
        uplink = make_uplink(cfg, store, identity)
        async with running(uplink):
            health = await watch(uplink, lambda h: h["connects"] >= 2
                                 and h["state"] == "backoff")
    assert health["last_error"] == "broker refused the message: Not authorized"
    assert health["cursor"] == 0 and health["acked_readings"] == 0


# ------------------------------------------------------------------ status


async def test_retained_status_online_on_connect_offline_as_will_and_on_clean_stop(
        broker: Mosquitto, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    await store.add(make_readings(7))

    def retained() -> dict[str, Any]:
        with Subscriber(broker.port, STATUS) as late:  # a fresh subscriber: retained only
            msg = late.wait_messages(1, timeout=5)[0]
        assert msg.retain
        return dict(json.loads(msg.payload))

    def statuses(messages: list[Received]) -> list[str]:
        return [json.loads(m.payload)["status"] for m in messages]

    async with TcpProxy(broker.port) as proxy:
        cfg = uplink_config(f"mqtt://127.0.0.1:{proxy.port}")
        uplink = make_uplink(cfg, store, identity)
        with Subscriber(broker.port, STATUS) as live:
            async with running(uplink):
                await arrived(live, lambda m: statuses(m) == ["online"])
                assert await asyncio.to_thread(retained) == {
                    "status": "online", "gateway": GATEWAY, "version": "9.9.9",
                    "boot_time": "2027-01-15T08:00:00Z", "backlog": 7}

                # The connection dies without DISCONNECT: the broker publishes the will.
                await proxy.pause()
                proxy.cut()
                await arrived(live, lambda m: statuses(m) == ["online", "offline"])
                assert await asyncio.to_thread(retained) == {"status": "offline",
                                                             "gateway": GATEWAY}
                await proxy.resume()
                await arrived(live, lambda m: statuses(m) == ["online", "offline", "online"])
                assert (await asyncio.to_thread(retained))["status"] == "online"
            # Clean stop: offline published (acknowledged), then DISCONNECT.
            assert uplink.health()["state"] == "stopped"
            assert await asyncio.to_thread(retained) == {"status": "offline",
                                                         "gateway": GATEWAY}
            await arrived(live, lambda m: len(m) == 4)
    assert statuses(live.snapshot()) == ["online", "offline", "online", "offline"]
    assert uplink.health()["connects"] == 2


# ------------------------------------------------------------------ independence, pacing


async def test_two_uplinks_one_dead_the_other_delivers_everything(
        broker: Mosquitto, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    store = await make_store(("alive", "dead"))
    alive = make_uplink(uplink_config(f"mqtt://127.0.0.1:{broker.port}", name="alive"),
                        store, identity)
    dead = make_uplink(uplink_config(f"mqtt://127.0.0.1:{free_port()}", name="dead",
                                     backoff_initial=0.05, backoff_max=0.1), store, identity)
    readings = make_readings(20_000)
    with Subscriber(broker.port, TELEMETRY) as sub:
        async with running(alive, dead):
            started = time.monotonic()
            for i in range(0, len(readings), 1000):
                await store.add(readings[i:i + 1000])
            msgs = await arrived(sub, has_readings(len(readings)))
            elapsed = time.monotonic() - started
            await watch(alive, lambda h: h["cursor"] == store.last_id())
            dead_health = dead.health()
    print(f"alive uplink: {len(readings) / elapsed:,.0f} readings/s beside a dead one")
    assert per_point(received_readings(msgs)) == per_point(readings)
    assert dead_health["cursor"] == 0 and dead_health["connects"] == 0
    assert dead_health["connect_attempts"] >= 2
    assert dead_health["last_error"].startswith("connection refused by 127.0.0.1:")


async def test_drain_rate_paces_a_backlog(broker: Mosquitto, identity: IdentityConfig,
                                         make_store: Callable[..., Any]) -> None:
    store = await make_store(("cloud",))
    await store.add(make_readings(1500))
    cfg = uplink_config(f"mqtt://127.0.0.1:{broker.port}", max_records=250, drain_rate=1000)
    uplink = make_uplink(cfg, store, identity)
    with Subscriber(broker.port, TELEMETRY) as sub:
        started = time.monotonic()
        async with running(uplink):
            msgs = await arrived(sub, has_readings(1500))
            elapsed = time.monotonic() - started
    # A burst of one second's worth (1000), then 250 readings every 0.25 s: the last
    # two packs cannot leave before 0.5 s.
    assert elapsed >= 0.5
    assert per_point(received_readings(msgs)) == per_point(make_readings(1500))


# ------------------------------------------------------------------ silent peers


class SilentPeer:
    """Accepts TCP connections and never answers; records when each one ends."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        self.closed.set()
        writer.close()


async def test_no_connack_is_reported_with_its_timeout(identity: IdentityConfig,
                                                       make_store: Callable[..., Any]) -> None:
    peer = SilentPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        store = await make_store(("cloud",))
        uplink = make_uplink(uplink_config(f"mqtt://127.0.0.1:{port}", connect_timeout=0.3),
                             store, identity)
        async with running(uplink):
            health = await watch(uplink, lambda h: h["state"] == "backoff")
        assert health["last_error"] == f"no CONNACK from 127.0.0.1:{port} within 0.3s"
        async with asyncio.timeout(WAIT):
            await peer.closed.wait()  # the gateway closed its side


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
async def test_stopping_mid_connect_leaves_no_connection_behind(
        scheme: str, pki: Pki, identity: IdentityConfig,
        make_store: Callable[..., Any]) -> None:
    # mqtt: stopped while waiting for CONNACK. mqtts: stopped while the TLS handshake
    # blocks the connect thread (it cannot be interrupted; its socket is closed after).
    peer = SilentPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        store = await make_store(("cloud",))
        uplink = make_uplink(uplink_config(f"{scheme}://127.0.0.1:{port}", ca_file=pki.ca,
                                           connect_timeout=3.0), store, identity)
        async with asyncio.timeout(2.0):  # well inside connect_timeout: nothing waits for it
            async with running(uplink):
                await peer.accepted.wait()
        assert uplink.health()["state"] == "stopped"
        async with asyncio.timeout(WAIT):
            await peer.closed.wait()
