"""Local ingress through the running daemon, with real clients: mosquitto_pub and
mosquitto_sub against the embedded broker, coap-client against the CoAP server, and
Debian's Mosquitto upstream receiving what they published as ``{client}/{point}``."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.local.clients import decode_key
from gatewayd.local.tokens import mint_token, sign_message
from tests.local.rig import GATEWAY, LocalRig, upstream_subscriber, wait_readings
from tests.peers.mosquitto import Mosquitto, Subscriber
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "upstream", persistence=True) as m:
        yield m


@pytest.fixture
def subscriber(upstream: Mosquitto) -> Iterator[Subscriber]:
    sub = upstream_subscriber(upstream)
    yield sub
    sub.stop()


def test_publish_arrives_upstream_and_refusals_are_counted(
        tmp_path: Path, daemon_factory: type[DaemonProcess], upstream: Mosquitto,
        subscriber: Subscriber) -> None:
    rig = LocalRig(tmp_path, daemon_factory, upstream=upstream)
    key = rig.add_client("thermo-1")
    assert len(key) == 43  # 32 bytes, base64url
    rig.add_client("app", "--publish", "apps/{client}/#", "--subscribe", "gatewayd/telemetry/#")
    assert (rig.clients_file.stat().st_mode & 0o777) == 0o640
    rig.start()
    assert key not in rig.daemon.log_text()

    token = rig.token("thermo-1")
    app = rig.mosquitto_sub("app", rig.token("app"), "gatewayd/telemetry/thermo-1/#", count=3)
    rig.wait_local(lambda h: h["connected"] == 1)

    out = rig.mosquitto_pub("thermo-1", token, "devices/thermo-1/temp", "21.5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "received PUBACK" in out.stdout + out.stderr
    pack = json.dumps([{"bn": "urn:dev:mac:0024befffe804ff1:", "n": "hum", "v": 40, "u": "%RH"},
                       {"n": "door", "vb": True}])
    assert rig.mosquitto_pub("thermo-1", token, "devices/thermo-1", pack).returncode == 0

    got = wait_readings(subscriber, lambda rs: len(rs) >= 3)
    assert sorted((r.device, r.point, r.value) for r in got) == [
        ("thermo-1", "door", True), ("thermo-1", "hum", 40), ("thermo-1", "temp", 21.5)]
    assert next(r.unit for r in got if r.point == "hum") == "%RH"

    # The local app receives the normalized telemetry (SenML) on gatewayd/telemetry/...
    lines, _ = app.communicate(timeout=30)
    topics = sorted(line.split(" ", 1)[0] for line in lines.splitlines()
                    if line.startswith("gatewayd/"))
    assert topics == ["gatewayd/telemetry/thermo-1/door", "gatewayd/telemetry/thermo-1/hum",
                      "gatewayd/telemetry/thermo-1/temp"], lines

    # Refused: wrong password, wrong key, expired token, ACL (publish and subscribe),
    # another device's topic, a malformed payload, another client's MQTT client id.
    assert rig.mosquitto_pub("thermo-1", "not-a-token", "devices/thermo-1/temp", "1"
                             ).returncode != 0
    assert rig.mosquitto_pub("thermo-1", rig.token("app"), "devices/thermo-1/temp", "1"
                             ).returncode != 0  # signed with app's key: bad signature
    expired = _expired_token(key)
    assert rig.mosquitto_pub("thermo-1", expired, "devices/thermo-1/temp", "1").returncode != 0
    assert rig.mosquitto_pub("thermo-1", token, "devices/thermo-1/temp", "1",
                             client_id="app").returncode != 0
    assert rig.mosquitto_pub("thermo-1", token, "apps/thermo-1/x", "1").returncode == 0
    assert rig.mosquitto_pub("thermo-1", token, "devices/app/temp", "1").returncode == 0
    assert rig.mosquitto_pub("thermo-1", token, "devices/thermo-1/temp", "warm").returncode == 0
    assert rig.mosquitto_pub("thermo-1", token, "gatewayd/telemetry/thermo-1/temp", "1"
                             ).returncode == 0
    sub = rig.mosquitto_sub("thermo-1", token, "devices/#", count=1)
    sub_out, _ = sub.communicate(timeout=30)
    assert "0x80" in sub_out or "128" in sub_out, sub_out  # SUBACK failure

    health = rig.wait_local(lambda h: h["refused_total"] >= 9)
    assert health["refused_by_client"]["thermo-1"] == {
        "bad_token": 1, "bad_signature": 1, "expired": 1, "client_id_mismatch": 1,
        "acl_publish": 3, "malformed": 1, "acl_subscribe": 1}
    assert health["messages"] == 2 and health["readings"] == 3
    # the refused messages were acknowledged but never stored: nothing more upstream
    assert rig.mosquitto_pub("thermo-1", token, "devices/thermo-1/temp", "22").returncode == 0
    got = wait_readings(subscriber, lambda rs: any(r.value == 22 for r in rs))
    assert sorted(r.value for r in got if r.point == "temp") == [21.5, 22]
    metrics = rig.daemon.ctl("metrics").stdout
    assert 'gatewayd_local_refused_total{transport="mqtt",reason="acl_publish"} 3' in metrics
    log = rig.daemon.log_text()
    assert key not in log and token not in log and expired not in log


def _expired_token(key: str) -> str:
    return mint_token("thermo-1", decode_key(key), ttl=60, now=time.time() - 3600)


def test_signed_messages_forged_wrong_topic_stale_and_replayed_are_dropped(
        tmp_path: Path, daemon_factory: type[DaemonProcess], upstream: Mosquitto,
        subscriber: Subscriber) -> None:
    rig = LocalRig(tmp_path, daemon_factory, upstream=upstream, lifespan="30s")
    key = decode_key(rig.add_client("meter", "--signed"))
    other_key = decode_key(rig.add_client("other"))
    rig.start()
    token = rig.token("meter")
    topic = "devices/meter/energy"

    good = rig.sign("meter", topic, "1234.5")
    assert rig.mosquitto_pub("meter", token, topic, good).returncode == 0
    wait_readings(subscriber, lambda rs: [r.value for r in rs] == [1234.5])

    forged = sign_message(topic, "9999", other_key)  # another client's key
    tampered = good.rsplit(".", 1)[0] + "." + sign_message(topic, "1", key).rsplit(".", 1)[1]
    wrong_topic = sign_message("devices/meter/power", "5", key)
    stale = sign_message(topic, "7", key, now=time.time() - 35)  # lifespan 30 s + skew 2 s
    # good again is a replay; "1234.5" is not signed at all
    for message in (forged, tampered, wrong_topic, good, "1234.5", stale):
        assert rig.mosquitto_pub("meter", token, topic, message).returncode == 0
    health = rig.wait_local(lambda h: h["refused_total"] >= 6)
    assert health["refused_by_client"]["meter"] == {
        "forged": 2, "wrong_topic": 1, "replayed": 1, "unsigned": 1, "stale": 1}
    fresh = sign_message(topic, "1240", key)
    assert rig.mosquitto_pub("meter", token, topic, fresh).returncode == 0
    got = wait_readings(subscriber, lambda rs: len(rs) >= 2)
    assert [r.value for r in got] == [1234.5, 1240]


def test_coap_client_posts_senml_json_and_cbor(
        tmp_path: Path, daemon_factory: type[DaemonProcess], upstream: Mosquitto,
        subscriber: Subscriber) -> None:
    rig = LocalRig(tmp_path, daemon_factory, upstream=upstream)
    rig.add_client("soil-7")
    rig.add_client("nosy", "--publish", "apps/#")
    rig.start()
    token = rig.token("soil-7")

    reply = rig.coap_post(token, json.dumps([{"n": "moisture", "v": 31.5, "u": "%"}]).encode())
    assert reply.code == "2.04", reply
    cbor = cbor2.dumps([{-2: "urn:dev:soil:", 0: "temp", 2: 12.25}, {0: "ok", 4: True}])
    assert rig.coap_post(token, cbor, content_format=112).code == "2.04"
    got = wait_readings(subscriber, lambda rs: len(rs) >= 3)
    assert sorted((r.device, r.point, r.value) for r in got) == [
        ("soil-7", "moisture", 31.5), ("soil-7", "ok", True), ("soil-7", "temp", 12.25)]

    assert rig.coap_post(None, b"[]").code == "4.01"
    assert rig.coap_post("x.y.z", b"[]").code == "4.01"
    assert rig.coap_post(rig.token("nosy"), b'[{"n":"a","v":1}]').code == "4.03"
    assert rig.coap_post(token, b"not json").code == "4.00"
    assert rig.coap_post(token, b'[{"n":"a","v":1}]', content_format=0).code == "2.04"
    assert rig.coap_post(token, b"<a/>", content_format=41).code == "4.15"
    health = rig.wait_local(lambda h: h["refused_total"] >= 5, transport="coap")
    assert health["refused"] == {"no_credentials": 1, "bad_token": 1, "acl_publish": 1,
                                 "malformed": 1, "unsupported_format": 1}
    assert health["messages"] == 3 and health["readings"] == 4


def test_kill9_right_after_puback_loses_nothing(
        tmp_path: Path, daemon_factory: type[DaemonProcess], upstream: Mosquitto,
        subscriber: Subscriber) -> None:
    # The upstream is down while the device publishes: the readings can only be in the
    # buffer's file when the daemon is killed. A long commit interval shows that the
    # acknowledgement forced the commit instead of waiting for the next one.
    upstream.stop()
    rig = LocalRig(tmp_path, daemon_factory, upstream=upstream, commit_interval="30s")
    rig.add_client("pump")
    rig.start()
    token = rig.token("pump")
    for i in range(5):
        out = rig.mosquitto_pub("pump", token, "devices/pump/starts", str(i))
        assert "received PUBACK" in out.stdout + out.stderr
    rig.daemon.kill9()  # right after the last PUBACK

    upstream.start()
    rig.daemon.start()
    rig.daemon.wait_ready()
    got = wait_readings(subscriber, lambda rs: len(rs) >= 5)
    assert [r.value for r in got] == [0, 1, 2, 3, 4]


def test_sighup_reloads_the_clients_file(
        tmp_path: Path, daemon_factory: type[DaemonProcess]) -> None:
    rig = LocalRig(tmp_path, daemon_factory)
    rig.add_client("old", "--subscribe", "devices/{client}/#")
    rig.start()
    old_token = rig.token("old")
    listener = rig.mosquitto_sub("old", old_token, "devices/old/#", count=1)
    rig.wait_local(lambda h: h["connected"] == 1)

    rig.add_client("new")
    assert rig.ctl("clients", "remove", "old").returncode == 0
    new_token = rig.token("new")
    assert rig.mosquitto_pub("new", new_token, "devices/new/x", "1").returncode != 0
    rig.daemon.signal(signal.SIGHUP)
    rig.wait_local(lambda h: h["clients"] == 1 and h["connected"] == 0)
    listener.wait(timeout=30)  # closed; its reconnect is refused, and mosquitto_sub ends
    assert rig.mosquitto_pub("new", new_token, "devices/new/x", "1").returncode == 0
    before = rig.local()["refused_by_client"]["old"]["unknown_client"]
    assert rig.mosquitto_pub("old", old_token, "devices/old/x", "1").returncode != 0
    health = rig.local()
    assert health["messages"] == 1
    assert health["refused_by_client"]["old"] == {"unknown_client": before + 1}
    assert health["refused_by_client"]["new"] == {"unknown_client": 1}

    # a broken clients file is refused on reload and the running set is kept
    rig.clients_file.write_text("[clients.bad]\nkey = 3\n")
    rig.daemon.signal(signal.SIGHUP)
    rig.daemon.wait_status(lambda st: "clients file reload refused" in rig.daemon.log_text())
    assert rig.mosquitto_pub("new", new_token, "devices/new/x", "2").returncode == 0
    assert GATEWAY in rig.daemon.status()["gateway"]


class _Publisher:
    """A paho client publishing QoS 1 values 0..n-1 to one point, recording the PUBACKs."""

    def __init__(self, port: int, client: str, index: int, token: str, n: int,
                 progress: threading.Condition) -> None:
        self.point = f"p{index}"
        self.n = n
        self.acked: set[int] = set()
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._progress = progress
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{client}/{index}",
                                  protocol=paho.MQTTv311)
        self.client.username_pw_set(client, token)
        self.client.max_inflight_messages_set(10)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_: Any) -> None:
        # Runs in paho's thread while paho holds its own lock: take ours only briefly
        # and never call paho under it (publish_all does not either: no lock inversion).
        with self._lock:
            value = self._mids.pop(mid, None)
            if value is None:
                self._early.add(mid)  # acknowledged before publish() returned its mid
            else:
                self.acked.add(value)
        with self._progress:
            self._progress.notify_all()

    def publish_all(self) -> None:
        for value in range(self.n):
            info = self.client.publish(f"devices/fleet/{self.point}", str(value), qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(value)
                else:
                    self._mids[info.mid] = value

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_kill9_midway_through_1000_messages_from_20_publishers(
        tmp_path: Path, daemon_factory: type[DaemonProcess], upstream: Mosquitto,
        subscriber: Subscriber) -> None:
    upstream.stop()  # everything acknowledged must be in the buffer's file
    rig = LocalRig(tmp_path, daemon_factory, upstream=upstream)
    key = decode_key(rig.add_client("fleet"))
    rig.start()
    token = mint_token("fleet", key, ttl=600)
    progress = threading.Condition()
    pubs = [_Publisher(rig.mqtt_port, "fleet", i, token, 50, progress) for i in range(20)]
    try:
        rig.wait_local(lambda h: h["connected"] == 20)
        for p in pubs:
            p.publish_all()
        with progress:  # kill as soon as a quarter of the messages are acknowledged
            assert progress.wait_for(lambda: sum(len(p.acked) for p in pubs) >= 250, 60)
        rig.daemon.kill9()
        acked = {(p.point, v) for p in pubs for v in set(p.acked)}
    finally:
        for p in pubs:
            p.stop()
    assert 250 <= len(acked) < 1000  # killed midway

    upstream.start()
    rig.daemon.start()
    rig.daemon.wait_ready()
    got = wait_readings(subscriber, lambda rs: acked <= {(r.point, r.value) for r in rs})
    assert all(r.device == "fleet" for r in got)
    by_point: dict[str, list[float]] = {}
    for r in got:
        by_point.setdefault(r.point, []).append(float(r.value))  # type: ignore[arg-type]
    for values in by_point.values():  # per point, in the order published
        assert values == sorted(values)
