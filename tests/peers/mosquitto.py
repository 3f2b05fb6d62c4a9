"""A real Mosquitto (Debian's /usr/sbin/mosquitto) on free loopback ports, and a
subscriber that collects what it receives.

``Mosquitto`` writes its own ``mosquitto.conf`` (persistence off, so a restart
starts clean) with these listeners, all on 127.0.0.1:

- ``port``: plain MQTT, anonymous;
- ``tls_port``: TLS with the test CA's server certificate, anonymous;
- ``mtls_port``: TLS that requires a client certificate signed by the test CA;
- ``password_port``: plain MQTT with a password file (made with mosquitto_passwd)
  and, if given, an ACL file;
- ``ws_port``: MQTT over WebSocket, anonymous;
- ``wss_port``: MQTT over WebSocket with TLS (server certificate), anonymous.

Start and stop it from sync or async code; ``restart`` keeps the ports. Readiness
is the broker's own "running" log line, awaited with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.peers.pki import Pki

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    """A TCP port nobody listens on at the moment (loopback)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports nobody listens on at the moment (loopback): all held at
    once while they are chosen, so that two of them can never be the same."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Mosquitto:
    """One Mosquitto process; a sync and an async context manager."""

    def __init__(self, directory: Path, *, pki: Pki | None = None,
                 users: dict[str, str] | None = None, acl: str | None = None,
                 websockets: bool = False, start_timeout: float = 10.0,
                 persistence: bool = False) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.users = dict(users or {})
        self.acl = acl
        self.start_timeout = start_timeout
        self.persistence = persistence
        self.websockets = websockets
        self._started = False  # ports are fixed once the broker has run
        self._choose_ports()
        self.conf = self.dir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._log_cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._write_conf()

    def _choose_ports(self) -> None:
        ports = iter(free_ports(6))
        self.port = next(ports)
        self.tls_port = next(ports) if self.pki else 0
        self.mtls_port = next(ports) if self.pki else 0
        self.password_port = next(ports) if self.users else 0
        self.ws_port = next(ports) if self.websockets else 0
        self.wss_port = next(ports) if self.websockets and self.pki else 0

    # ------------------------------------------------------------ config

    def _write_conf(self) -> None:
        lines = [
            "per_listener_settings true",
            *(["persistence true", f"persistence_location {self.dir}/", "autosave_interval 0"]
              if self.persistence else ["persistence false"]),
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"user {os.environ.get('USER', 'root') if os.geteuid() else 'root'}",
            "",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if self.pki:
            tls = [f"cafile {self.pki.ca}", f"certfile {self.pki.server.cert}",
                   f"keyfile {self.pki.server.key}"]
            lines += ["", f"listener {self.tls_port} 127.0.0.1", *tls, "allow_anonymous true"]
            lines += ["", f"listener {self.mtls_port} 127.0.0.1", *tls,
                      "require_certificate true", "use_identity_as_username true"]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True, timeout=10)
            lines += ["", f"listener {self.password_port} 127.0.0.1",
                      f"password_file {pw}", "allow_anonymous false"]
            if self.acl is not None:
                acl = self.dir / "acl"
                acl.write_text(self.acl)
                lines.append(f"acl_file {acl}")
        if self.ws_port:
            lines += ["", f"listener {self.ws_port} 127.0.0.1", "protocol websockets",
                      "allow_anonymous true"]
        if self.wss_port and self.pki:
            lines += ["", f"listener {self.wss_port} 127.0.0.1", "protocol websockets",
                      f"cafile {self.pki.ca}", f"certfile {self.pki.server.cert}",
                      f"keyfile {self.pki.server.key}", "allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ process

    def start(self) -> None:
        """Start the broker and return once it says it is running (or raise).

        At the first start only, a port another process took in the meantime is
        replaced (new ports, a new config) and the start tried again; a restart keeps
        its ports, since clients know them."""
        assert self.proc is None, "already running"
        for attempt in range(3):
            mark = len(self.log)
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            self._reader = threading.Thread(target=self._read_log, args=(self.proc,),
                                            daemon=True)
            self._reader.start()
            try:
                self.wait_log(lambda line: " running" in line, start=mark,
                              timeout=self.start_timeout)
            except RuntimeError:
                taken = any("Unable to create" in line or "Address already in use" in line
                            for line in self.log[mark:])
                self.proc.wait(5)
                self.proc = None
                if not taken or self._started or attempt == 2:
                    raise
                self._choose_ports()
                self._write_conf()
                continue
            self._started = True
            return

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._log_cond:
                self.log.append(raw.decode(errors="replace").rstrip())
                self._log_cond.notify_all()
        with self._log_cond:
            self.log.append("<exited>")
            self._log_cond.notify_all()

    def wait_log(self, predicate: Callable[[str], bool], *, start: int = 0,
                 timeout: float = 10.0) -> str:
        """The first log line from index ``start`` on that matches; raises on timeout/exit."""
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while True:
                for line in self.log[start:]:
                    if predicate(line):
                        return line
                    if line == "<exited>":
                        raise RuntimeError("mosquitto exited:\n" + self.log_text())
                start = len(self.log)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching mosquitto log line in {timeout}s:\n"
                                       + self.log_text())
                self._log_cond.wait(left)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        with self._log_cond:
            return "\n".join(self.log)

    # async forms: the process calls block for at most a few seconds

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Mosquitto:
        await self.astart()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


@dataclass
class Subscriber:
    """A paho client in its own thread that collects messages on ``topic``.

    It reconnects (and subscribes again) by itself after a broker restart;
    ``subscriptions`` counts the SUBACKs received. From asyncio, :meth:`until`
    waits for a condition on the messages without blocking the loop (bound it
    with ``asyncio.timeout``).
    """

    port: int
    topic: str
    host: str = "127.0.0.1"
    qos: int = 1
    #: With a client id and ``clean=False`` the session (and what is queued for it while
    #: the subscriber is away) survives reconnects and, with persistence, broker restarts.
    client_id: str = ""
    clean: bool = True
    messages: list[Received] = field(default_factory=list)
    subscriptions: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=self.clean, protocol=paho.MQTTv311)
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(self.topic, self.qos)

    def _on_subscribe(self, *_: Any) -> None:
        with self._cond:
            self.subscriptions += 1
            self._cond.notify_all()
            self._wake()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          msg.qos))
            self._cond.notify_all()
            self._wake()

    def _wake(self) -> None:
        for loop, event in self._waiters:
            loop.call_soon_threadsafe(event.set)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and return once the SUBACK arrived."""
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self.wait_subscribed(1, timeout=timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"{what} not reached in {timeout}s "
                                   f"({len(self.messages)} messages, "
                                   f"{self.subscriptions} subscriptions)")

    def wait_subscribed(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` SUBACKs arrived (from threads or sync code)."""
        self._wait(lambda: self.subscriptions >= count, timeout, f"{count} subscriptions")

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` messages arrived (from threads or sync code)."""
        self._wait(lambda: len(self.messages) >= count, timeout, f"{count} messages")
        return self.snapshot()

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float,
                   what: str = "condition") -> list[Received]:
        """Block until ``predicate(messages)`` holds (from threads or sync code)."""
        self._wait(lambda: predicate(self.messages), timeout, what)
        return self.snapshot()

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    async def until(self, predicate: Callable[[Subscriber], bool]) -> list[Received]:
        """Return the messages once ``predicate(self)`` holds; re-checked at each
        message and SUBACK."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            self._waiters.append(waiter)
        try:
            while True:
                waiter[1].clear()
                with self._cond:
                    if predicate(self):
                        return list(self.messages)
                await waiter[1].wait()
        finally:
            with self._cond:
                self._waiters.remove(waiter)

    def __enter__(self) -> Subscriber:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
