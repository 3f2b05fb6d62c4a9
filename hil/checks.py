"""The acceptance checks, run in order against the running daemon of one bench.

- ``uplink``: the gateway connects to the bench's broker and says it is online;
- ``readings:DEVICE``: every device yields readings, each point as expected;
- ``write:DEVICE/POINT``: a signed write command is accepted, lands, and reads back;
- ``replug:WHAT``: the daemon notices the loss of an adapter and recovers by itself;
- ``tunnel``: opened by a signed command, a connection through the bastion reaches
  the gateway, and it closes again;
- ``upstream``: everything the buffer committed arrived at the broker, in order;
- ``stop``: the daemon stops cleanly.

Each check returns a CheckResult; a check that cannot pass raises CheckFailed with
what it measured so far. Status lives in the daemon's process and is read over its
control socket (polled); what arrives at the broker is awaited as it comes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gatewayd.config.units import parse_host_port
from gatewayd.control import request
from hil.bench import UPLINK, Bench, Replug, RunPaths, WriteCheck, gatewayd_config
from hil.report import FAIL, PASS, SKIP, CheckResult
from hil.upstream import Arrival, Operator, Upstream, UpstreamMonitor, command
from tests.support.daemon import DaemonProcess

Status = dict[str, Any]


class CheckFailed(Exception):
    """A check did not pass; ``figures`` holds what it measured before."""

    def __init__(self, detail: str, **figures: Any) -> None:
        super().__init__(detail)
        self.figures = figures


@dataclass
class Run:
    """One run of the checks: the bench, the daemon under test and the central side."""

    bench: Bench
    daemon: DaemonProcess
    monitor: UpstreamMonitor
    operator: Operator
    paths: RunPaths
    ready_ns: int = 0
    interactive: bool = False
    say: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))

    @property
    def timeout(self) -> float:
        return self.bench.timeout

    async def status(self) -> Status:
        return await asyncio.to_thread(request, self.daemon.socket, "status")

    async def wait_status(self, predicate: Callable[[Status], bool], what: str,
                          within: float | None = None) -> Status:
        """Ask the daemon (every 200 ms: its state is in another process) until
        ``predicate`` holds; TimeoutError saying ``what`` did not happen."""
        limit = self.timeout if within is None else within
        deadline = time.monotonic() + limit
        while True:
            st = await self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {limit:g}s")
            await asyncio.sleep(0.2)  # the state is in the daemon's process: ask again

    async def send(self, cmd: dict[str, Any], scope: str) -> tuple[dict[str, Any], float]:
        return await command(self.monitor, self.operator, cmd, scope=scope,
                             audience=self.bench.gateway_id, within=self.timeout)


def health(st: Status, component: str) -> dict[str, Any]:
    entry = st.get("components", {}).get(component) or {}
    h: dict[str, Any] = entry.get("health") or {}
    return h


def of(seen: Upstream, device: str, point: str | None = None) -> list[Arrival]:
    return [a for a in seen.arrivals if a.reading.device == device
            and (point is None or a.reading.point == point)]


async def timed(name: str, check: Awaitable[CheckResult | list[CheckResult]]
                ) -> list[CheckResult]:
    """Run one check; its failure (or a bug in it) becomes a failed row, not a crash."""
    started = time.monotonic()
    try:
        out = await check
        results = out if isinstance(out, list) else [out]
    except CheckFailed as err:
        results = [CheckResult(name, FAIL, err.figures, str(err))]
    except TimeoutError as err:
        results = [CheckResult(name, FAIL, {}, str(err) or "timed out")]
    except Exception as err:  # noqa: BLE001 - reported as this check's failure, with its type
        results = [CheckResult(name, FAIL, {}, f"{type(err).__name__}: {err}")]
    for r in results:
        r.seconds = round(time.monotonic() - started, 2)
    return results


# ---- uplink ---------------------------------------------------------------------------


async def check_uplink(run: Run) -> CheckResult:
    st = await run.wait_status(lambda s: bool(health(s, f"uplink:{UPLINK}").get("connected")),
                               f"uplink to {run.bench.broker.url} connected")
    connected_s = (time.time_ns() - run.ready_ns) / 1e9
    seen = await run.monitor.wait(lambda u: any(b"online" in p for p in u.status),
                                  run.timeout, "the gateway's online status on the broker")
    h = health(st, f"uplink:{UPLINK}")
    return CheckResult("uplink", PASS, {"broker": run.bench.broker.url,
                                        "connected_after_s": round(connected_s, 2),
                                        "connects": h.get("connects"),
                                        "status_messages": len(seen.status)})


# ---- readings -------------------------------------------------------------------------


def _wanted(run: Run) -> dict[str, tuple[str, ...]]:
    return {d.name: tuple(e.point for e in d.expect) for d in run.bench.devices}


def _enough(run: Run, seen: Upstream) -> bool:
    need = run.bench.readings
    for device, points in _wanted(run).items():
        arrivals = of(seen, device)
        if not points and len(arrivals) < need:
            return False
        for point in points:
            if sum(1 for a in arrivals if a.reading.point == point) < need:
                return False
    return True


async def check_readings(run: Run) -> list[CheckResult]:
    try:
        seen = await run.monitor.wait(lambda u: _enough(run, u), run.timeout,
                                      "readings of every device")
    except TimeoutError:
        seen = run.monitor.snapshot()  # judged device by device below
    need = run.bench.readings
    results = []
    for dev in run.bench.devices:
        arrivals = of(seen, dev.name)
        problems = []
        shown = {}
        for exp in dev.expect:
            values = [a.reading.value for a in arrivals if a.reading.point == exp.point]
            if not values:
                problems.append(f"{exp.point}: no reading")
                continue
            bad = [v for v in values if not exp.holds(v)]
            if bad:
                problems.append(f"{exp.point}: {bad[0]!r} is not {exp.describe()} "
                                f"({len(bad)} of {len(values)} readings)")
            elif len(values) < need:
                problems.append(f"{exp.point}: {len(values)} readings, wanted {need}")
            shown[exp.point] = values[-1]
        if not dev.expect and len(arrivals) < need:
            problems.append(f"{len(arrivals)} readings, wanted {need}")
        figures: dict[str, Any] = {"readings": len(arrivals),
                                   "points": len({a.reading.point for a in arrivals})}
        if arrivals:
            first = min(a.reading.time for a in arrivals)
            last = max(a.reading.time for a in arrivals)
            figures["first_after_s"] = round((first - run.ready_ns) / 1e9, 2)
            if last > first:
                figures["per_s"] = round((len(arrivals) - 1) / ((last - first) / 1e9), 1)
        figures["values"] = {k: v if not isinstance(v, bytes) else v.hex()
                             for k, v in shown.items()}
        results.append(CheckResult(f"readings:{dev.name}", FAIL if problems else PASS, figures,
                                   "; ".join(problems)))
    return results


# ---- writes ---------------------------------------------------------------------------


async def _commands_ready(run: Run) -> None:
    await run.wait_status(lambda s: bool((health(s, f"uplink:{UPLINK}").get("commands") or {})
                                         .get("subscribed")), "subscribed to commands")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


async def _write(run: Run, w: WriteCheck, value: Any) -> tuple[float, float]:
    """Write ``value`` by a signed command; (seconds to the result, seconds until a
    reading shows it)."""
    sent = time.time_ns()
    result, took = await run.send({"action": "write", "device": w.device, "point": w.point,
                                   "value": value}, scope=f"write:{w.device}/{w.point}")
    if result.get("status") != "ok":
        raise CheckFailed(f"write {value!r}: {result.get('status')}: {result.get('reason')} "
                          f"({result.get('detail')})", result_ms=round(took * 1000))
    seen = await run.monitor.wait(
        lambda u: any(a.reading.time > sent and _same(a.reading.value, value)
                      for a in of(u, w.device, w.point)),
        run.timeout, f"a reading of {w.device}/{w.point} = {value!r}")
    back = min(a.at for a in of(seen, w.device, w.point)
               if a.reading.time > sent and _same(a.reading.value, value))
    return took, (back - sent) / 1e9


async def check_write(run: Run, w: WriteCheck) -> CheckResult:
    name = f"write:{w.device}/{w.point}"
    await _commands_ready(run)
    before = [a.reading.value for a in of(run.monitor.snapshot(), w.device, w.point)]
    took, readback = await _write(run, w, w.value)
    figures: dict[str, Any] = {"value": w.value, "result_ms": round(took * 1000),
                               "readback_ms": round(readback * 1000)}
    if w.landed is not None:
        landed = await w.landed()
        figures["device_holds"] = landed
        if not _same(landed, w.value):
            raise CheckFailed(f"the device holds {landed!r}, not {w.value!r}", **figures)
    if w.restore and before and not _same(before[-1], w.value):
        await _write(run, w, before[-1])
        figures["restored"] = before[-1]
    return CheckResult(name, PASS, figures)


# ---- unplug and plug back -------------------------------------------------------------


def _lost(st: Status, device: str, driver: str) -> bool:
    """Whether the daemon shows ``device`` as cut off from its hardware."""
    h = health(st, f"device:{device}")
    if not h:
        return False
    if driver == "serial":
        return h.get("state") == "disconnected"
    if driver == "modbus":
        return (h.get("connection") or {}).get("state") != "connected"
    if driver == "ble":
        return h.get("state") not in ("scanning", "connected")
    return True  # no sign to wait for: recovery is what counts


async def _run_command(argv: tuple[str, ...], within: float) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(within):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CheckFailed(f"{' '.join(argv)}: no exit within {within:g}s") from None
    if proc.returncode != 0:
        raise CheckFailed(f"{' '.join(argv)} exited with {proc.returncode}: "
                          f"{out.decode(errors='replace').strip()[-300:]}")


async def check_replug(run: Run, r: Replug) -> CheckResult:
    name = f"replug:{r.what}"
    wait_lost = run.timeout
    if r.actions is not None:
        off, on = r.actions
        how = "simulated"
    elif r.off is not None and r.on is not None:
        off_argv, on_argv = r.off, r.on

        async def off() -> None:
            await _run_command(off_argv, run.timeout)

        async def on() -> None:
            await _run_command(on_argv, run.timeout)
        how = "power switch"
    elif run.interactive:
        async def off() -> None:
            run.say(f">>> Unplug {r.what} now (waiting up to 5 minutes).")

        async def on() -> None:
            run.say(f">>> Plug {r.what} back in now.")
        how, wait_lost = "operator", max(run.timeout, 300.0)
    else:
        return CheckResult(name, SKIP, {}, "no power switch (off/on) in the bench file and "
                                           "no operator at a terminal to unplug it")
    drivers = {d.name: d.driver for d in run.bench.devices}
    started = time.monotonic()
    await off()
    await run.wait_status(lambda s: all(_lost(s, d, drivers.get(d, "")) for d in r.devices),
                          f"the daemon noticing that {', '.join(r.devices)} went away",
                          within=wait_lost)
    lost_s = time.monotonic() - started
    plugged = time.time_ns()
    started = time.monotonic()
    await on()
    await run.monitor.wait(
        lambda u: all(any(a.reading.time > plugged for a in of(u, d)) for d in r.devices),
        max(run.timeout, wait_lost), f"new readings of {', '.join(r.devices)}")
    back_s = time.monotonic() - started
    st = await run.status()
    figures: dict[str, Any] = {"how": how, "noticed_s": round(lost_s, 2),
                               "readings_again_s": round(back_s, 2)}
    for d in r.devices:
        h = health(st, f"device:{d}")
        for key in ("connects", "disconnects"):
            if key in h:
                figures[f"{d}_{key}"] = h[key]
    return CheckResult(name, PASS, figures)


# ---- tunnel ---------------------------------------------------------------------------


async def _probe(run: Run, payload: bytes | None) -> bytes:
    """Connect to the bastion's side of the forward; send ``payload`` and read as many
    bytes back (echo service), or read the first bytes the service sends (None)."""
    tunnel = run.bench.tunnel
    assert tunnel is not None
    proc = None
    if tunnel.connect is not None:
        host, port = parse_host_port(tunnel.connect)
        reader, writer = await asyncio.open_connection(host, port)
    else:
        assert tunnel.command is not None
        proc = await asyncio.create_subprocess_exec(
            *tunnel.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdin is not None
        reader, writer = proc.stdout, proc.stdin
    try:
        async with asyncio.timeout(run.timeout):
            if payload is None:
                return await reader.read(256)
            writer.write(payload)
            await writer.drain()
            return await reader.readexactly(len(payload))
    finally:
        writer.close()
        if proc is not None:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def check_tunnel(run: Run) -> CheckResult:
    tunnel = run.bench.tunnel
    assert tunnel is not None
    await _commands_ready(run)
    started = time.monotonic()
    result, took = await run.send({"action": "tunnel.open", "ttl": 600}, scope="tunnel:open")
    if result.get("status") != "ok":
        raise CheckFailed(f"tunnel.open: {result.get('status')}: {result.get('reason')} "
                          f"({result.get('detail')})")
    await run.wait_status(lambda s: bool(health(s, "tunnel").get("up")), "the tunnel up")
    up_s = time.monotonic() - started
    payload = os.urandom(16).hex().encode() if tunnel.local is None else None
    sent = time.monotonic()
    got = await _probe(run, payload)
    rtt = time.monotonic() - sent
    figures: dict[str, Any] = {"open_result_ms": round(took * 1000), "up_s": round(up_s, 2),
                               "probe_ms": round(rtt * 1000)}
    if payload is not None and got != payload:
        raise CheckFailed(f"sent {payload!r} through the tunnel, got {got!r} back", **figures)
    if payload is None and not got:
        raise CheckFailed(f"nothing came back from {tunnel.local}", **figures)
    figures["reached"] = "echo service" if payload is not None else got[:40].decode(
        errors="replace").strip()
    result, _ = await run.send({"action": "tunnel.close"}, scope="tunnel:close")
    if result.get("status") != "ok":
        raise CheckFailed(f"tunnel.close: {result.get('status')}: {result.get('reason')}",
                          **figures)
    st = await run.wait_status(lambda s: health(s, "tunnel").get("state") == "closed",
                               "the tunnel closed")
    figures["connections"] = health(st, "tunnel").get("connections")
    return CheckResult("tunnel", PASS, figures)


# ---- upstream -------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] \
        if len(values) > 1 else values[0]


async def check_upstream(run: Run) -> CheckResult:
    """Stop every device (a reload with them disabled), let the buffer drain, and compare
    what the broker got with what the buffer committed: all of it, once each at least,
    in time order per point, nothing dropped."""
    st = await run.status()
    produced = {d.name: health(st, f"device:{d.name}").get("readings", 0)
                for d in run.bench.devices}
    run.daemon.write_config(gatewayd_config(run.bench, run.paths, devices_enabled=False))
    await asyncio.to_thread(request, run.daemon.socket, "reload")

    def drained(s: Status) -> bool:
        buf = s["buffer"]
        return (not any(n.startswith("device:") for n in s["components"])
                and buf["pending"] == 0
                and (buf["uplinks"].get(UPLINK) or {}).get("backlog_rows") == 0)

    st = await run.wait_status(drained, "devices stopped and the buffer drained")
    committed, drops = st["buffer"]["committed_total"], st["buffer"]["drops_total"]
    try:
        seen = await run.monitor.wait(lambda u: len({a.key for a in u.arrivals}) >= committed,
                                      run.timeout, f"{committed} readings at the broker")
    except TimeoutError:
        seen = run.monitor.snapshot()
    first: dict[tuple[str, str, int, Any], Arrival] = {}
    for a in seen.arrivals:
        first.setdefault(a.key, a)
    received = len(first)
    per_point: dict[str, int] = {}
    order_violations = 0
    last_time: dict[tuple[str, str], int] = {}
    for a in first.values():  # in arrival order
        r = a.reading
        per_point[f"{r.device}/{r.point}"] = per_point.get(f"{r.device}/{r.point}", 0) + 1
        if r.time < last_time.get((r.device, r.point), r.time):
            order_violations += 1
        last_time[(r.device, r.point)] = max(r.time, last_time.get((r.device, r.point), r.time))
    per_device = {d: sum(n for k, n in per_point.items() if k.split("/")[0] == d)
                  for d in produced}
    latencies = [(a.at - a.reading.time) / 1e6 for a in first.values()]
    figures: dict[str, Any] = {
        "committed": committed, "received": received,
        "duplicates": len(seen.arrivals) - received, "dropped": drops,
        "order_violations": order_violations, "undecodable": seen.undecodable,
        "per_device": {d: {"produced_at_check": produced[d], "received": per_device[d]}
                       for d in produced},
        "per_point": per_point,
    }
    if latencies:
        figures.update(latency_p50_ms=round(_percentile(latencies, 50), 1),
                       latency_p95_ms=round(_percentile(latencies, 95), 1),
                       latency_max_ms=round(max(latencies), 1))
    problems = []
    if received != committed:
        problems.append(f"the buffer committed {committed} readings, the broker got "
                        f"{received} distinct ones")
    if drops:
        problems.append(f"{drops} readings dropped: {st['buffer'].get('drops')}")
    if order_violations:
        problems.append(f"{order_violations} readings arrived before an older one of their "
                        "point")
    short = [d for d in produced if per_device[d] < produced[d]]
    if short:
        problems.append("fewer readings at the broker than the device had made: "
                        + ", ".join(f"{d} {per_device[d]} < {produced[d]}" for d in short))
    if seen.undecodable:
        problems.append(f"{seen.undecodable} messages the broker got were not SenML")
    if problems:
        raise CheckFailed("; ".join(problems), **figures)
    return CheckResult("upstream", PASS, figures)


# ---- stop -----------------------------------------------------------------------------


async def check_stop(run: Run) -> CheckResult:
    started = time.monotonic()
    run.daemon.signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(run.daemon.wait_exit, run.timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"gatewayd still running {run.timeout:g}s after SIGTERM") from None
    figures = {"exit_code": code, "stop_s": round(time.monotonic() - started, 2)}
    if code != 0:
        raise CheckFailed(f"gatewayd exited with {code} on SIGTERM", **figures)
    return CheckResult("stop", PASS, figures)
