"""What the footprint, idle-cost and peer benches share: the daemon started as
systemd would start it (``Type=notify``, the bench binds ``NOTIFY_SOCKET``), a
pymodbus slave in a process of its own that counts the requests it answers,
``/proc`` readings of a process and all its threads, and a paho subscriber that
counts the values a gateway publishes.

Everything listens on 127.0.0.1 on ports chosen at run time. Nothing here asserts.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

GATEWAYD = ROOT / ".venv" / "bin" / "gatewayd"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    """Progress on stderr (the figures go to stdout and the JSON file)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "arch": platform.machine(), "cpu": model,
            "python": platform.python_version(), "kernel": platform.release(),
            "load": os.getloadavg()}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcSample:
    """Counters of one process (all its threads) at one moment."""

    at: float  # time.monotonic()
    cpu_s: float  # utime + stime of the process, dead threads included (clock ticks)
    run_ns: int  # sum over live threads of schedstat field 1: time on a CPU
    timeslices: int  # sum over live threads of schedstat field 3: times scheduled in
    voluntary: int  # sum over live threads of voluntary_ctxt_switches
    involuntary: int  # sum over live threads of nonvoluntary_ctxt_switches
    threads: int


def sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    run_ns = slices = vol = invol = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, _wait, n = Path(task, "schedstat").read_text().split()
            status = Path(task, "status").read_text()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread ended meanwhile
        run_ns += int(run)
        slices += int(n)
        threads += 1
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return ProcSample(time.monotonic(), cpu_s, run_ns, slices, vol, invol, threads)


def rates(a: ProcSample, b: ProcSample) -> dict[str, float]:
    """Per-second figures between two samples of the same process. ``cpu_pct`` is
    from the threads' schedstat run time (nanoseconds; threads alive at both ends),
    ``cpu_pct_ticks`` from utime+stime (whole process, 1/CLK_TCK resolution)."""
    span = b.at - a.at
    return {
        "window_s": span,
        "cpu_pct": 100 * (b.run_ns - a.run_ns) / 1e9 / span,
        "cpu_pct_ticks": 100 * (b.cpu_s - a.cpu_s) / span,
        "wakeups_per_s": (b.timeslices - a.timeslices) / span,
        "voluntary_cs_per_s": (b.voluntary - a.voluntary) / span,
        "involuntary_cs_per_s": (b.involuntary - a.involuntary) / span,
        "threads": b.threads,
    }


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) from /proc/PID/smaps_rollup, and the peak RSS (VmHWM)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
            out[key.lower() + "_mib"] = int(rest.split()[0]) / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["hwm_mib"] = int(line.split()[1]) / 1024
    return out


# ---------------------------------------------------------------- the daemon


class NotifySocket:
    """An ``AF_UNIX`` datagram socket standing in for systemd's notify socket;
    every message is kept with the monotonic time it was received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cond = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            at = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines()
                          if "=" in line)
            with self._cond:
                self.messages.append((at, fields))
                self._cond.notify_all()

    def wait_for(self, key: str, value: str, *, start: int, timeout: float,
                 alive: Callable[[], bool]) -> tuple[int, float]:
        """Index and receive time of the first message from ``start`` with key=value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if self.messages[i][1].get(key) == value:
                        return i, self.messages[i][0]
                if not alive():
                    raise RuntimeError("gatewayd exited before " + key)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key}={value} within {timeout:g}s")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """``gatewayd run`` as systemd runs it: the installed console script, a
    notify socket, STATE_DIRECTORY and RUNTIME_DIRECTORY of its own, log to a file."""

    def __init__(self, config: str, name: str = "gw") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"gwb-{name}-"))  # short: Unix sockets
        self.config = self.tmp / "gatewayd.toml"
        self.config.write_text(config)
        self.notify = NotifySocket(self.tmp / "notify")
        self.log = self.tmp / "gatewayd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for READY=1; returns the seconds from the exec to READY."""
        (self.tmp / "state").mkdir(exist_ok=True)
        (self.tmp / "run").mkdir(exist_ok=True)
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path),
                   STATE_DIRECTORY=str(self.tmp / "state"),
                   RUNTIME_DIRECTORY=str(self.tmp / "run"))
        env.pop("WATCHDOG_USEC", None)
        self._mark = len(self.notify.messages)
        with self.log.open("ab") as out:
            began = time.monotonic()
            self.proc = subprocess.Popen([str(GATEWAYD), "run", "--config", str(self.config)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        proc = self.proc
        try:
            _, ready = self.notify.wait_for("READY", "1", start=self._mark, timeout=timeout,
                                            alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}:\n{self.log.read_text()[-3000:]}") from None
        return ready - began

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        self.stop()
        self.notify.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def uplink_toml(port: int, *, prefix: str = "gateways/gw-bench") -> str:
    return (f'[uplinks.local]\nurl = "mqtt://127.0.0.1:{port}"\n'
            f'topic_prefix = "{prefix}"\nauth = {{ type = "none" }}\nmax_delay = "1s"\n')


# ---------------------------------------------------------------- Modbus slave


def block_points(n: int = 100) -> list[dict[str, Any]]:
    """The peer job's point map: ``n`` points in one block of holding registers,
    80% uint16 then 20% float32 (100 points: hr:0 .. hr:119, one read of 120)."""
    ints = n * 8 // 10
    floats = n - ints
    return ([{"name": f"r{i:03d}", "address": f"hr:{i}", "type": "uint16"}
             for i in range(ints)]
            + [{"name": f"f{i:03d}", "address": f"hr:{ints + 2 * i}", "type": "float32"}
               for i in range(floats)])


def modbus_device_toml(name: str, port: int, unit: int, points: list[dict[str, Any]],
                       poll: str = "1s") -> str:
    pts = ",\n  ".join("{ " + ", ".join(f'{k} = {json.dumps(v)}' for k, v in p.items()) + " }"
                       for p in points)
    return (f'[devices.{name}]\ndriver = "modbus"\nurl = "tcp://127.0.0.1:{port}"\n'
            f'unit_id = {unit}\npoll = "{poll}"\npoints = [\n  {pts},\n]\n')


def _serve(units: int, registers: int, conn: multiprocessing.connection.Connection) -> None:
    import asyncio

    from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap

    async def main() -> None:
        maps = {u: UnitMap(hr={i: (i * 7 + u) % 65536 for i in range(registers)},
                           ir={i: i for i in range(registers)},
                           co={i: bool(i % 2) for i in range(16)}) for u in range(1, units + 1)}
        async with PymodbusSlave(maps) as slave:
            conn.send(await slave.start_tcp())
            while True:
                msg = await asyncio.to_thread(conn.recv)
                if msg == "stop":
                    return
                conn.send(slave.count())

    asyncio.run(main())


class SlaveProcess:
    """tests/peers' pymodbus slave (units 1..``units``) in a child process, so its
    CPU is not the gateway's; :meth:`count` is the requests it answered so far."""

    def __init__(self, units: int, registers: int = 200) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(units, registers, theirs), daemon=True)
        self._proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("the Modbus slave did not start within 30 s")
        self.port: int = self._conn.recv()
        self.pid: int = self._proc.pid or 0

    def count(self) -> int:
        self._conn.send("count")
        n: int = self._conn.recv()
        return n

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> SlaveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- subscriber


class ValueCounter:
    """A paho subscriber counting the values published on some topics, with
    their arrival times: SenML records (gatewayd) or ThingsBoard gateway-API
    telemetry (``{"device": [{"ts": .., "values": {..}}]}``). ``answer`` maps an
    RPC request topic prefix to a function building the reply (topic, payload)."""

    def __init__(self, port: int, topics: Sequence[str],
                 answer: Callable[[str, bytes], tuple[str, bytes] | None] | None = None
                 ) -> None:
        self.events: list[tuple[float, str, int]] = []  # (monotonic, device, values)
        self.rpc_answered = 0
        self._answer = answer
        self._lock = threading.Lock()
        self._topics = list(topics)
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter",
                                  protocol=paho.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the bench subscriber did not subscribe within 10 s")

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        at = time.monotonic()
        if self._answer is not None:
            reply = self._answer(msg.topic, bytes(msg.payload))
            if reply is not None:
                client.publish(reply[0], reply[1], qos=1)
                self.rpc_answered += 1
                return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        found: list[tuple[str, int]] = []
        if isinstance(body, list):  # SenML pack
            for rec in body:
                if isinstance(rec, dict) and "n" in rec:
                    found.append((str(rec["n"]).split("/", 1)[0], 1))
        elif isinstance(body, dict):  # ThingsBoard gateway API
            for device, entries in body.items():
                if isinstance(entries, list):
                    n = sum(len(e.get("values", {})) for e in entries if isinstance(e, dict))
                    found.append((device, n))
        with self._lock:
            self.events.extend((at, d, n) for d, n in found)

    def devices(self) -> set[str]:
        with self._lock:
            return {d for _, d, n in self.events if n}

    def values_between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(n for at, _, n in self.events if t0 <= at < t1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str,
               interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:g}s")
        time.sleep(interval)


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
