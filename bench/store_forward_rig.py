"""Processes of the store-and-forward bench: the daemon, Mosquitto brokers (plain,
persistent, bridged), a ``mosquitto_sub`` that counts SenML records, and
``/proc`` readings (RSS, CPU time).

Everything listens on 127.0.0.1 on free ports chosen at run time. Nothing here
asserts: the bench prints what it measures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers.mosquitto import Mosquitto
from tests.peers.pki import Pki

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
GATEWAYD = VENV_BIN / "gatewayd"
LOCK_TIMING = Path(__file__).resolve().parent / "buffer_lock_timing.py"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
GATEWAY_ID = "gw-bench"
TELEMETRY = f"gateways/{GATEWAY_ID}/telemetry"


# ---------------------------------------------------------------- /proc


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """``VmRSS`` (or ``VmHWM``, the peak) of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no {field_name} for pid {pid}")


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU time a process (or only its main thread, the one running
    the event loop) has used so far."""
    where = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    stat = Path(where).read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str,
               interval: float = 0.2) -> None:
    """Re-check ``predicate`` every ``interval`` s; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:g}s")
        time.sleep(interval)


# ---------------------------------------------------------------- brokers


class BenchBroker(Mosquitto):
    """Mosquitto with a config of the bench's own: persistence on (so a subscriber's
    persistent session and its queued messages survive a restart), queues
    unlimited, optionally a TLS listener and a bridge to another broker.

    ``autosave_interval`` is Mosquitto's (default 1800 s: the database is written
    only then and at a clean exit). ``max_inflight`` bounds the QoS-1 messages in
    flight to each client (Mosquitto's default is 20).
    """

    def __init__(self, directory: Path, *, pki: Pki | None = None,
                 bridge_to: int | None = None, bridge_topic: str = "#",
                 max_inflight: int = 20, autosave_interval: int = 1800) -> None:
        self.bridge_to = bridge_to
        self.bridge_topic = bridge_topic
        self.max_inflight = max_inflight
        self.autosave_interval = autosave_interval
        super().__init__(directory, pki=pki)

    def _write_conf(self) -> None:
        store = self.dir / "store"
        store.mkdir(exist_ok=True)
        lines = [
            "persistence true",
            f"persistence_location {store}/",
            f"autosave_interval {self.autosave_interval}",
            "max_queued_messages 0",  # 0 = no limit: the whole backlog is held
            f"max_inflight_messages {self.max_inflight}",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"user {os.environ.get('USER', 'root') if os.geteuid() else 'root'}",
            "allow_anonymous true",
            "",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.pki:
            lines += ["", f"listener {self.tls_port} 127.0.0.1", f"cafile {self.pki.ca}",
                      f"certfile {self.pki.server.cert}", f"keyfile {self.pki.server.key}"]
        if self.bridge_to is not None:
            lines += ["", "connection upstream", f"address 127.0.0.1:{self.bridge_to}",
                      f"topic {self.bridge_topic} out 1", "cleansession false",
                      "bridge_protocol_version mqttv311", "restart_timeout 1",
                      "notifications false", "start_type automatic"]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL, no chance to save its database."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)
        if self._reader is not None:
            self._reader.join(timeout=5)


# ---------------------------------------------------------------- subscriber


@dataclass
class Arrival:
    at: float  # wall-clock seconds when mosquitto_sub received the message
    records: int  # SenML records in it
    payload: bytes


@dataclass
class RecordCounter:
    """``mosquitto_sub`` (QoS 1, persistent session, fixed client id) writing each
    message with its arrival time to a file; a thread tails the file and counts
    SenML records (occurrences of ``"n":``) per name prefix. It reconnects by itself
    after a broker restart, and with a persistent broker nothing sent meanwhile
    is lost to it.
    """

    port: int
    topic: str
    directory: Path
    prefixes: Sequence[str] = ("",)
    client_id: str = "bench-counter"
    arrivals: list[Arrival] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        self.path = self.directory / f"{self.client_id}.out"
        self._out = self.path.open("wb")
        self.proc = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-c",
             "-i", self.client_id, "-t", self.topic, "-F", r"%U %p"],
            stdout=self._out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.counts = {p: 0 for p in self.prefixes}
        self._needles = {p: b'"n":"' + p.encode() for p in self.prefixes}
        self._running = True
        self._thread = threading.Thread(target=self._tail, daemon=True)
        self._thread.start()

    def _tail(self) -> None:
        with self.path.open("rb") as f:
            rest = b""
            while self._running:
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(0.02)
                    continue
                *lines, rest = (rest + chunk).split(b"\n")
                if not lines:
                    continue
                batch = []
                for line in lines:
                    at, _, payload = line.partition(b" ")
                    batch.append(Arrival(float(at), payload.count(b'"n":'), payload))
                with self._cond:
                    self.arrivals.extend(batch)
                    for a in batch:
                        for p, needle in self._needles.items():
                            self.counts[p] += a.payload.count(needle)
                    self._cond.notify_all()

    def wait_connected(self, broker: Mosquitto, *, start: int = 0,
                       timeout: float = 10.0) -> None:
        """Until the broker logs this subscriber's connection (from log line ``start``)."""
        broker.wait_log(lambda line: f" as {self.client_id} " in line and "New client" in line,
                        start=start, timeout=timeout)

    def wait_count(self, prefix: str, n: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.counts[prefix] >= n, timeout):
                raise TimeoutError(f"{self.counts[prefix]} of {n} {prefix!r} records "
                                   f"arrived within {timeout:g}s")

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Until no message arrived for ``quiet`` s (or ``timeout`` s passed)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            with self._cond:
                n = len(self.arrivals)
                if n == seen:
                    return
                seen = n
                self._cond.wait(quiet)
                if len(self.arrivals) == n:
                    return
                seen = -1

    def total(self, prefix: str = "") -> int:
        with self._cond:
            return self.counts[prefix]

    def snapshot(self) -> list[Arrival]:
        with self._cond:
            return list(self.arrivals)

    def records_between(self, t0: float, t1: float) -> int:
        with self._cond:
            return sum(a.records for a in self.arrivals if t0 <= a.at < t1)

    def stop(self) -> None:
        if not hasattr(self, "proc"):
            return  # never started
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        time.sleep(0.1)  # let the tail thread read the last lines
        self._running = False
        self._thread.join(5)
        self._out.close()


def decode_records(arrivals: Sequence[Arrival]) -> list[tuple[str, Any, float]]:
    """``(name, value, time in s)`` of every SenML record received, in order."""
    out: list[tuple[str, Any, float]] = []
    for a in arrivals:
        pack = json.loads(a.payload)
        bt = 0.0
        for rec in pack:
            bt = rec.get("bt", bt)
            out.append((rec["n"], rec.get("v"), bt + rec.get("t", 0.0)))
    return out


# ---------------------------------------------------------------- the daemon


@dataclass(frozen=True)
class SimGroup:
    """``devices`` sim devices named ``{prefix}NN``, each polling ``points``
    counters every ``poll`` seconds (``limit`` polls, 0 = no end)."""

    prefix: str
    devices: int
    points: int
    poll: float
    limit: int = 0

    @property
    def rate(self) -> float:
        return self.devices * self.points / self.poll

    @property
    def total(self) -> int:
        return self.devices * self.points * self.limit

    def toml(self) -> str:
        pts = ", ".join(f'{{ name = "p{i:02d}", signal = "counter" }}'
                        for i in range(self.points))
        out = []
        for d in range(self.devices):
            out += [f"[devices.{self.prefix}{d:02d}]", 'driver = "sim"',
                    f'poll = "{self.poll * 1000:g}ms"', f"points = [{pts}]"]
            if self.limit:
                out.append(f"limit = {self.limit}")
            out.append("")
        return "\n".join(out)


@dataclass(frozen=True)
class UplinkOptions:
    port: int
    max_records: int = 500
    max_inflight: int = 16
    tls_ca: Path | None = None

    def toml(self) -> str:
        scheme = "mqtts" if self.tls_ca else "mqtt"
        lines = ["[uplinks.central]", f'url = "{scheme}://127.0.0.1:{self.port}"',
                 'auth = { type = "none" }', f"max_records = {self.max_records}",
                 f"max_inflight = {self.max_inflight}", 'max_delay = "200ms"',
                 'backoff_initial = "100ms"', 'backoff_max = "1s"', 'connect_timeout = "2s"']
        if self.tls_ca:
            lines.append(f'ca_file = "{self.tls_ca}"')
        return "\n".join(lines) + "\n"


def daemon_config(*, uplink: UplinkOptions, groups: Sequence[SimGroup],
                  buffer: str = "") -> str:
    head = f'[gateway]\nid = "{GATEWAY_ID}"\n\n[logging]\nlevel = "info"\n\n'
    head += "[buffer]\n" + buffer + "\n"
    return head + uplink.toml() + "\n" + "\n".join(g.toml() for g in groups)


class Gatewayd:
    """``.venv/bin/gatewayd run`` with a config written by the bench; its state
    (the buffer file) survives :meth:`kill9` and :meth:`start` again."""

    def __init__(self, root: Path, config: str, *, lock_timing: bool = False) -> None:
        """``lock_timing``: run under bench/buffer_lock_timing.py (see :meth:`lock_times`)."""
        self.root = root
        self.lock_timing = lock_timing
        self.lock_file = root / "lock-timing.json"
        self.state = root / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.runtime = Path(tempfile.mkdtemp(prefix="gwb-"))  # short: a Unix socket path
        self.config_path = root / "gatewayd.toml"
        self.config_path.write_text(config)
        self.log_path = root / "gatewayd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    @property
    def buffer_path(self) -> Path:
        return self.state / "buffer.sqlite"

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, STATE_DIRECTORY=str(self.state),
                   RUNTIME_DIRECTORY=str(self.runtime), PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        command = [str(GATEWAYD)]
        if self.lock_timing:
            env["GATEWAYD_LOCK_TIMING"] = str(self.lock_file)
            command = [str(VENV_BIN / "python"), str(LOCK_TIMING)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*command, "run", "--config", str(self.config_path)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_until(self._answers, timeout=timeout, what="gatewayd control socket", interval=0.1)

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gatewayd exited with {self.proc.returncode}:\n"
                               + self.log_path.read_text()[-4000:])
        try:
            self.request("buffer-stats")
        except OSError:
            return False
        return True

    def request(self, cmd: str) -> dict[str, Any]:
        """One control-socket request (what ``gatewayctl`` does, without its start-up)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.runtime / "control.sock"))
            s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        if not answer.get("ok"):
            raise RuntimeError(f"control request {cmd!r} failed: {answer}")
        return answer

    def buffer_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.request("buffer-stats")["buffer"]
        return stats

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def uplink_health(self) -> dict[str, Any]:
        health: dict[str, Any] = self.status()["components"]["uplink:central"]["health"]
        return health

    def lock_times(self) -> dict[str, dict[str, float]]:
        """Buffer-lock figures per holder since the previous call (lock_timing only)."""
        self.lock_file.unlink(missing_ok=True)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(self.lock_file.exists, timeout=10, what="lock timing file", interval=0.05)
        time.sleep(0.05)  # written in one call; let it finish
        times: dict[str, dict[str, float]] = json.loads(self.lock_file.read_text())
        return times

    def reload(self, config: str) -> None:
        self.config_path.write_text(config)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.runtime, ignore_errors=True)

    def __enter__(self) -> Gatewayd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def committed_counters(self) -> tuple[dict[str, int], int, int]:
        """With the daemon dead: per ``device/point``, the highest counter value in
        the buffer file; the highest row id; the number of rows. Read from a copy of the file
        (and its WAL), so the daemon's own recovery later sees it untouched."""
        assert self.proc is None, "the daemon still runs"
        with tempfile.TemporaryDirectory() as tmp:
            for suffix in ("", "-wal"):
                src = Path(str(self.buffer_path) + suffix)
                if src.exists():
                    shutil.copy2(src, Path(tmp) / ("copy.sqlite" + suffix))
            conn = sqlite3.connect(Path(tmp) / "copy.sqlite")
            try:
                rows = conn.execute(
                    "SELECT s.device || '/' || s.point, max(r.v) FROM readings r"
                    " JOIN series s ON s.id = r.series GROUP BY r.series").fetchall()
                last, count = conn.execute("SELECT max(id), count(*) FROM readings").fetchone()
            finally:
                conn.close()
        return {name: int(v) for name, v in rows}, int(last or 0), int(count)
