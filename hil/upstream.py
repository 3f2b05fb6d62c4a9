"""The central side, as the checks see it: a client of the bench's broker that collects
everything the gateway publishes (telemetry decoded from SenML, command results, its
status) and publishes signed commands, plus the operator key that signs them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd import senml
from gatewayd.errors import ProtocolError
from gatewayd.reading import Reading
from hil.bench import OPERATOR_KID, Broker

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Arrival:
    """One reading as it arrived upstream; ``at`` is the arrival time (ns)."""

    reading: Reading
    at: int

    @property
    def key(self) -> tuple[str, str, int, Any]:
        r = self.reading
        return (r.device, r.point, r.time, r.value)


@dataclass
class Upstream:
    """What the monitor has seen so far (guarded by the monitor's lock)."""

    arrivals: list[Arrival] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # command name -> result
    status: list[bytes] = field(default_factory=list)
    undecodable: int = 0


class UpstreamMonitor:
    """A paho client in its own thread, subscribed to ``{prefix}/#``.

    From asyncio, :meth:`wait` awaits a condition on what has arrived; it is checked
    again at every message, so nothing sleeps.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.prefix = broker.topic_prefix
        self.seen = Upstream()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._subscribed = threading.Event()
        parts = urlsplit(broker.url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"broker url {broker.url!r}: expected mqtt[s]:// or ws[s]://HOST")
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        websockets = parts.scheme in ("ws", "wss")
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"hil-{uuid.uuid4().hex[:8]}",
                                  transport="websockets" if websockets else "tcp",
                                  protocol=paho.MQTTv311)
        if websockets:
            self.client.ws_set_options(path=parts.path or "/mqtt")
        if parts.scheme in ("mqtts", "wss"):
            auth = broker.client
            self.client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None,
                                certfile=str(auth.cert_file) if auth.cert_file else None,
                                keyfile=str(auth.key_file) if auth.key_file else None)
        if broker.client.username:
            password = (broker.client.password_file.read_text().strip()
                        if broker.client.password_file else None)
            self.client.username_pw_set(broker.client.username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # ---- paho's thread ---------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any,
                    _p: Any = None) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        at = time.time_ns()
        topic, payload = msg.topic, bytes(msg.payload)
        with self._lock:
            if topic == f"{self.prefix}/telemetry":
                try:
                    readings = senml.decode(payload, fmt=self.broker.format)
                except ProtocolError:
                    self.seen.undecodable += 1
                else:
                    self.seen.arrivals += [Arrival(r, at) for r in readings]
            elif topic.startswith(f"{self.prefix}/commands/") and topic.endswith("/result"):
                name = topic[len(f"{self.prefix}/commands/"):-len("/result")]
                try:
                    self.seen.results[name] = json.loads(payload)
                except ValueError:
                    self.seen.undecodable += 1
            elif topic == f"{self.prefix}/status":
                self.seen.status.append(payload)
            for loop, event in self._waiters:
                loop.call_soon_threadsafe(event.set)

    # ---- the asyncio side ------------------------------------------------------------

    async def start(self, within: float) -> None:
        """Connect and subscribe; raises TimeoutError naming the broker."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not await asyncio.to_thread(self._subscribed.wait, within):
            raise TimeoutError(f"could not subscribe at {self.broker.url} within {within:g}s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> Upstream:
        with self._lock:
            return Upstream(list(self.seen.arrivals), dict(self.seen.results),
                            list(self.seen.status), self.seen.undecodable)

    async def wait(self, predicate: Callable[[Upstream], bool], within: float,
                   what: str) -> Upstream:
        """The snapshot once ``predicate`` holds; TimeoutError saying ``what`` did not."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(within):
                while True:
                    waiter[1].clear()
                    seen = self.snapshot()
                    if predicate(seen):
                        return seen
                    await waiter[1].wait()
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {within:g}s") from None
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    async def publish(self, topic: str, payload: bytes, within: float) -> None:
        info = self.client.publish(topic, payload, qos=1)
        await asyncio.to_thread(info.wait_for_publish, within)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic} not acknowledged within {within:g}s")


class Operator:
    """A throw-away ES256 operator key: trusted by this run's daemon only."""

    def __init__(self) -> None:
        self.kid = OPERATOR_KID
        self.key = ec.generate_private_key(ec.SECP256R1())

    def install(self, directory: Path) -> None:
        """Write the public key where the daemon's ``trusted_keys_dir`` points."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        path = directory / f"{self.kid}.pem"
        path.write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        path.chmod(0o644)

    def sign(self, cmd: dict[str, Any], *, scope: str, audience: str,
             lifetime: int = 60) -> bytes:
        now = int(time.time())
        claims = {"aud": audience, "iat": now, "exp": now + lifetime,
                  "jti": uuid.uuid4().hex, "scope": scope, "cmd": cmd, "sub": "hil"}
        return jwt.encode(claims, self.key, algorithm="ES256",
                          headers={"kid": self.kid}).encode()


async def command(monitor: UpstreamMonitor, operator: Operator, cmd: dict[str, Any], *,
                  scope: str, audience: str, within: float) -> tuple[dict[str, Any], float]:
    """Send one signed command and wait for its result: (result, seconds it took)."""
    name = f"hil-{uuid.uuid4().hex[:12]}"
    token = operator.sign(cmd, scope=scope, audience=audience)
    started = time.monotonic()
    await monitor.publish(f"{monitor.prefix}/commands/{name}", token, within)
    seen = await monitor.wait(lambda s: name in s.results, within,
                              f"the result of {cmd.get('action')} command {name}")
    return seen.results[name], time.monotonic() - started
