"""The local-ingress rig: a clients file made with ``gatewayctl clients``, the daemon
with ``[local.mqtt]``/``[local.coap]`` on free loopback ports, Debian's Mosquitto
upstream, and the real local clients (mosquitto_pub, mosquitto_sub, coap-client)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd import senml
from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto, Received, Subscriber, free_port
from tests.support.daemon import DaemonProcess, gatewayctl

GATEWAY = "gw-local"
TELEMETRY = f"gateways/{GATEWAY}/telemetry"
WAIT = 30.0
COAP_CLIENT = "/usr/bin/coap-client-notls"

CONFIG = """
[gateway]
id = "{gw}"

[logging]
status_interval = "1s"

[buffer]
commit_interval = "{commit_interval}"

[local]
clients_file = "{clients}"
signed_lifespan = "{lifespan}"
clock_skew = "2s"

[local.mqtt]
listen = ["127.0.0.1:{mqtt_port}"]

[local.coap]
listen = ["127.0.0.1:{coap_port}"]
{extra}
"""

UPLINK = """
[uplinks.cloud]
url = "mqtt://127.0.0.1:{port}"
auth = {{ type = "none" }}
max_delay = "50ms"
backoff_initial = "50ms"
backoff_max = "300ms"
connect_timeout = "2s"
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readings_of(messages: list[Received]) -> list[Reading]:
    return [r for m in messages if m.topic == TELEMETRY for r in senml.decode(m.payload)]


@dataclass
class CoapReply:
    code: str  # "2.04", "4.01", ... ("" when nothing came back)
    text: str


class LocalRig:
    """One daemon with local ingress, and the helpers a test drives it with."""

    def __init__(self, root: Path, daemon_factory: Callable[..., DaemonProcess], *,
                 upstream: Mosquitto | None = None, lifespan: str = "60s",
                 commit_interval: str = "200ms", extra: str = "") -> None:
        self.root = root
        self.clients_file = root / "clients.toml"
        self.mqtt_port = free_port()
        self.coap_port = free_udp_port()
        text = CONFIG.format(gw=GATEWAY, clients=self.clients_file, mqtt_port=self.mqtt_port,
                             coap_port=self.coap_port, lifespan=lifespan,
                             commit_interval=commit_interval, extra=extra)
        if upstream is not None:
            text += UPLINK.format(port=upstream.port)
        self.daemon = daemon_factory(text)

    # -- clients file --------------------------------------------------------

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return gatewayctl(*args, "--config", str(self.daemon.config_path))

    def add_client(self, name: str, *options: str) -> str:
        out = self.ctl("clients", "add", name, *options)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def token(self, name: str, *options: str) -> str:
        out = self.ctl("clients", "token", name, *options)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def sign(self, name: str, topic: str, payload: str) -> str:
        out = self.ctl("clients", "sign", name, "--topic", topic, "--payload", payload)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    # -- daemon --------------------------------------------------------------

    def start(self) -> None:
        self.daemon.start()
        self.daemon.wait_ready()
        self.wait_listening()

    def wait_listening(self) -> None:
        self.daemon.wait_status(lambda st: bool(
            self.health(st, "local-mqtt").get("listening")
            and self.health(st, "local-coap").get("listening")))

    @staticmethod
    def health(st: dict[str, Any], component: str) -> dict[str, Any]:
        comp = st["components"].get(component) or {}
        return comp.get("health") or {}  # type: ignore[no-any-return]

    def local(self, transport: str = "mqtt") -> dict[str, Any]:
        return self.health(self.daemon.status(), f"local-{transport}")

    def wait_local(self, predicate: Callable[[dict[str, Any]], bool],
                   transport: str = "mqtt") -> dict[str, Any]:
        st = self.daemon.wait_status(
            lambda st: predicate(self.health(st, f"local-{transport}")), timeout=WAIT)
        return self.health(st, f"local-{transport}")

    # -- real local clients --------------------------------------------------

    def mosquitto_pub(self, client: str, password: str, topic: str, message: str, *,
                      qos: int = 1, client_id: str | None = None,
                      extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port),
             "-i", client_id or client, "-u", client, "-P", password, "-q", str(qos),
             "-t", topic, "-m", message, "-d", *extra],
            capture_output=True, text=True, timeout=WAIT, check=False)

    def mosquitto_sub(self, client: str, password: str, topic: str, *, count: int,
                      client_id: str | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.mqtt_port),
             "-i", client_id or client, "-u", client, "-P", password, "-q", "1",
             "-t", topic, "-C", str(count), "-W", str(int(WAIT)), "-v", "-d"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def coap_post(self, token: str | None, payload: bytes, *, content_format: int = 110
                  ) -> CoapReply:
        """POST ``payload`` to /telemetry with Debian's coap-client. The token goes in a
        Uri-Query option (-O 15,...): coap-client's URI buffer is too small for a JWT."""
        body = self.root / f"coap-body-{time.monotonic_ns()}"
        body.write_bytes(payload)
        cmd = [COAP_CLIENT, "-m", "post", "-t", str(content_format), "-f", str(body),
               "-B", "20"]
        if token is not None:
            cmd += ["-O", f"15,token={token}"]
        cmd.append(f"coap://127.0.0.1:{self.coap_port}/telemetry")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT, check=False)
        text = (out.stdout + out.stderr).strip()
        code, _, rest = text.partition(" ")
        if code[:1] in "2345" and "." in code:
            return CoapReply(code, rest)
        return CoapReply("2.04" if out.returncode == 0 and not text else "", text)


def upstream_subscriber(upstream: Mosquitto) -> Subscriber:
    sub = Subscriber(upstream.port, f"gateways/{GATEWAY}/telemetry", client_id="local-counter",
                     clean=False)
    sub.start()
    return sub


def wait_readings(sub: Subscriber, predicate: Callable[[list[Reading]], bool],
                  timeout: float = WAIT) -> list[Reading]:
    """Block until the readings received upstream satisfy ``predicate`` (checked at each
    message); raise with what arrived otherwise."""
    try:
        sub._wait(lambda: predicate(readings_of(sub.messages)), timeout, "upstream readings")
    except TimeoutError:
        got = readings_of(sub.snapshot())
        raise AssertionError(f"upstream readings not as expected in {timeout}s: "
                             f"{[(r.name, r.value) for r in got][:50]}") from None
    return readings_of(sub.snapshot())


def dump(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True)
