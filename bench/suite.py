"""bench/run: every bench script in turn, each in a process of its own with
``--json``, and one table of the figures, the peers' figures, ratios and the
targets, printed (Markdown) and written as JSON. Nothing is asserted.

A script that is missing, fails or times out is reported as such and its rows
show "missing"; the others still run. ``--quick`` passes ``--quick`` on and
keeps the whole run to a few minutes.

    bench/run [--quick] [--json PATH] [--markdown PATH] [--only NAME[,NAME..]]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
MIB_PER_MB = 1e6 / 2**20

# In the order they run: the short ones first.
SCRIPTS = ("buffer_append", "modbus_poll", "mqtt_clients", "footprint", "thingsboard_peer",
           "store_forward")


# ---------------------------------------------------------------- running


def _relay(stream: IO[bytes], tail: deque[str]) -> None:
    """Copy a script's stderr (its progress) to ours, keeping the last lines."""
    for raw in stream:
        line = raw.decode(errors="replace")
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line.rstrip())


def run_script(name: str, *, quick: bool, out_dir: Path, timeout: float) -> dict[str, Any]:
    """Run bench/NAME.py; its stdout goes to OUT_DIR/NAME.log, its progress (stderr)
    to ours. Returns status ("ok", "missing", "failed", "timeout"), reason, result."""
    script = BENCH / f"{name}.py"
    if not script.exists():
        return {"status": "missing", "reason": f"{script.relative_to(ROOT)} does not exist"}
    json_path = out_dir / f"{name}.json"
    json_path.unlink(missing_ok=True)
    log_path = out_dir / f"{name}.log"
    cmd = [str(PYTHON), str(script), "--json", str(json_path)] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    began = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stderr is not None
        relay = threading.Thread(target=_relay, args=(proc.stderr, tail), daemon=True)
        relay.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"status": "timeout", "reason": f"still running after {timeout:g} s",
                    "elapsed_s": time.monotonic() - began, "log": str(log_path)}
        finally:
            relay.join(5)
    elapsed = time.monotonic() - began
    base = {"elapsed_s": elapsed, "log": str(log_path), "stderr_tail": list(tail)}
    if proc.returncode != 0:
        last = next((line for line in reversed(tail) if line.strip()), "")
        return {**base, "status": "failed",
                "reason": f"exit code {proc.returncode}: {last.strip()[:200]}"}
    try:
        result = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        return {**base, "status": "failed", "reason": f"no JSON figures: {err}"}
    return {**base, "status": "ok", "result": result}


# ---------------------------------------------------------------- the table


def dig(data: Any, path: str) -> Any:
    """``dig(d, "a.b.0")``: nested lookup, None where anything is missing."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    value: float
    text: str

    def met(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value


@dataclass(frozen=True)
class Row:
    item: str
    figure: str
    script: str
    ours: str | Callable[[dict[str, Any]], Any]  # a path in the script's JSON, or a function
    peer: str | Callable[[dict[str, Any]], Any] | None = None
    fmt: str = ",.0f"
    target: Target | None = None
    note: str | Callable[[dict[str, Any]], str] = ""


def _value(spec: str | Callable[[dict[str, Any]], Any] | None, result: dict[str, Any]) -> Any:
    if spec is None:
        return None
    try:
        return spec(result) if callable(spec) else dig(result, spec)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _drain_note(r: dict[str, Any]) -> str:
    n = dig(r, "drain.backlog")
    return f"backlog {n:,.0f}" if isinstance(n, (int, float)) else ""


def _drain_per_million(r: dict[str, Any]) -> float:
    return 1e6 / float(r["drain"]["drain_per_s"])


def _peer_drain_per_million(r: dict[str, Any]) -> float:
    return 1e6 / float(r["peer_drain"]["drain_per_s"])


def _client_rate(r: dict[str, Any], prefix: str) -> float:
    return next(float(v) for k, v in r["msg_per_s"].items() if k.startswith(prefix))


ROWS = [
    Row("1 uplink", "readings/s end to end, QoS 1, batch 1", "store_forward",
        "throughput.1.delivered_per_s", "peer_throughput.delivered_per_s",
        note="peer: Mosquitto bridge, one reading per message"),
    Row("1 uplink", "readings/s end to end, QoS 1, batch 50", "store_forward",
        "throughput.50.delivered_per_s", "peer_throughput.delivered_per_s"),
    Row("1 uplink", "readings/s end to end, QoS 1, batch 500", "store_forward",
        "throughput.500.delivered_per_s", "peer_throughput.delivered_per_s",
        target=Target(">=", 50_000, ">= 50,000")),
    Row("2 drain", "backlog drain time, s", "store_forward", "drain.drain_s", "peer_drain.drain_s",
        fmt=".1f", note=_drain_note),
    Row("2 drain", "drain time scaled to 1,000,000, s", "store_forward", _drain_per_million,
        _peer_drain_per_million, fmt=".1f", target=Target("<=", 30, "<= 30 s"),
        note="from the drain rate"),
    Row("2 drain", "RSS before the outage, MiB", "store_forward", "drain.rss_before_mib",
        "peer_drain.rss_before_mib", fmt=".1f"),
    Row("2 drain", "RSS with the backlog, MiB", "store_forward", "drain.rss_full_mib",
        "peer_drain.rss_full_mib", fmt=".1f",
        target=Target("<=", 60 * MIB_PER_MB, "< 60 MB (57.2 MiB)"), note=_drain_note),
    Row("2 drain", "RSS after the drain, MiB", "store_forward", "drain.rss_after_mib",
        "peer_drain.rss_after_mib", fmt=".1f"),
    Row("2 drain", "readings lost on kill -9 in an outage", "store_forward", "kill9.missing",
        "peer_kill9.missing",
        note=lambda r: (f"of {dig(r, 'kill9.committed'):,.0f} committed / "
                        f"{dig(r, 'peer_kill9.queued_at_kill'):,.0f} queued")),
    Row("3 footprint", "RSS at idle, demo config, MiB", "footprint", "footprint.demo.rss_mib",
        fmt=".1f", target=Target("<=", 40 * MIB_PER_MB, "<= 40 MB (38.1 MiB)")),
    Row("3 footprint", "PSS at idle, demo config, MiB", "footprint", "footprint.demo.pss_mib",
        fmt=".1f"),
    Row("3 footprint", "RSS, 20 devices, MiB", "footprint", "footprint.devices20.rss_mib",
        fmt=".1f"),
    Row("3 footprint", "PSS, 20 devices, MiB", "footprint", "footprint.devices20.pss_mib",
        fmt=".1f"),
    Row("3 footprint", "start to READY, demo config, s", "footprint", "footprint.demo.ready_s",
        fmt=".2f", target=Target("<=", 1.5, "<= 1.5 s"),
        note=lambda r: f"median of {len(dig(r, 'footprint.demo.runs'))} starts"),
    Row("4 idle", "CPU, nothing to do, % of a core", "footprint", "idle.nothing.cpu_pct",
        fmt=".2f", target=Target("<=", 1.0, "<= 1%")),
    Row("4 idle", "wake-ups/s, nothing to do", "footprint", "idle.nothing.wakeups_per_s",
        fmt=".1f", note=lambda r: (f"{dig(r, 'idle.nothing.voluntary_cs_per_s'):.1f} "
                                   "voluntary cs/s")),
    Row("4 idle", "CPU, demo config, % of a core", "footprint", "idle.demo.cpu_pct", fmt=".2f"),
    Row("4 idle", "CPU, 100 Modbus points at 1 Hz, %", "footprint", "idle.modbus100.cpu_pct",
        fmt=".2f", target=Target("<=", 1.0, "<= 1%")),
    Row("4 idle", "wake-ups/s, 100 Modbus points at 1 Hz", "footprint",
        "idle.modbus100.wakeups_per_s", fmt=".1f",
        note=lambda r: (f"{dig(r, 'idle.modbus100.voluntary_cs_per_s'):.1f} voluntary cs/s, "
                        f"{dig(r, 'idle.modbus100.requests_per_s'):.1f} requests/s")),
    Row("5 modbus", "requests per cycle, 10 units x 100 mixed points", "modbus_poll",
        "requests_per_cycle", "requests_one_per_point", fmt=",.1f",
        note="peer: one request per point; hr, ir and coils: 4 reads per unit"),
    Row("5 modbus", "cycle interval stdev, ms", "modbus_poll", "interval_stdev_ms", fmt=".1f"),
    Row("5 modbus", "batch arrival after the tick, p99, ms", "modbus_poll", "arrival_p99_ms",
        fmt=".1f"),
    Row("5 modbus", "CPU of the poller, % of a core", "modbus_poll", "cpu_pct", fmt=".2f"),
    Row("6 buffer", "readings/s committed vs raw executemany", "buffer_append", "buffer_per_s",
        "raw_per_s", note="peer: raw sqlite3 in the same process"),
    Row("7 peer", "CPU, 10 x 100 Modbus at 1 Hz, % of a core", "thingsboard_peer",
        "gatewayd.cpu_pct", "peer.cpu_pct", fmt=".1f", target=Target("<=", 3.0, "<= 3%"),
        note="peer: ThingsBoard IoT Gateway 3.8.5"),
    Row("7 peer", "RSS, MiB", "thingsboard_peer", "gatewayd.rss_mib", "peer.rss_mib", fmt=".1f"),
    Row("7 peer", "PSS, MiB", "thingsboard_peer", "gatewayd.pss_mib", "peer.pss_mib", fmt=".1f"),
    Row("7 peer", "Modbus requests per cycle", "thingsboard_peer", "gatewayd.requests_per_cycle",
        "peer.requests_per_cycle", fmt=",.1f", target=Target("<=", 10, "<= 10 (1 per unit)")),
    Row("7 peer", "values published per s (1,000 due)", "thingsboard_peer",
        "gatewayd.values_per_s", "peer.values_per_s"),
    Row("7 peer", "wake-ups/s", "thingsboard_peer", "gatewayd.wakeups_per_s",
        "peer.wakeups_per_s"),
    Row("mqtt", "QoS-1 msg/s, gatewayd adapter vs aiomqtt", "mqtt_clients",
        lambda r: _client_rate(r, "gatewayd"), lambda r: _client_rate(r, "aiomqtt"),
        note="client libraries alone"),
]


def _fmt(x: Any, fmt: str) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "missing" if x is None else str(x)
    return format(x, fmt)


def table(scripts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in ROWS:
        run = scripts.get(row.script, {})
        result = run.get("result")
        if result is None:
            status = run.get("status", "not run")
            reason = f"{status}: {run['reason']}" if run.get("reason") else status
            rows.append({"item": row.item, "figure": row.figure, "script": row.script,
                         "gatewayd": None, "peer": None, "ratio": None,
                         "target": row.target.text if row.target else "",
                         "verdict": "missing" if row.target else "",
                         "note": f"{row.script}: {reason}",
                         "fmt": row.fmt})
            continue
        ours, peer = _value(row.ours, result), _value(row.peer, result)
        ratio = (ours / peer if isinstance(ours, (int, float)) and isinstance(peer, (int, float))
                 and peer else None)
        verdict = ""
        if row.target:
            verdict = ("missing" if not isinstance(ours, (int, float))
                       else "met" if row.target.met(ours) else "MISSED")
        note = row.note(result) if callable(row.note) else row.note
        if row.peer is not None and peer is None:
            note = (note + "; " if note else "") + (
                "peer: " + str(result.get("peer_error", "missing")).splitlines()[0][:160])
        rows.append({"item": row.item, "figure": row.figure, "script": row.script,
                     "gatewayd": ours, "peer": peer, "ratio": ratio,
                     "target": row.target.text if row.target else "", "verdict": verdict,
                     "note": note, "fmt": row.fmt})
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run of {report['date']} ({'quick' if report['quick'] else 'full'}, "
        f"{report['elapsed_s']:.0f} s): {m['nproc']} x {m['cpu']} ({m['arch']}), "
        f"Python {m['python']}, load average {report['load_start'][0]:.2f} at the start and "
        f"{report['load_end'][0]:.2f} at the end.",
    ]
    if "merged_from" in report:
        mf = report["merged_from"]
        lines.append(f"Scripts not run then are from the {'quick' if mf['quick'] else 'full'} "
                     f"run of {mf['date']} (load average {mf['load_start'][0]:.2f} at its start, "
                     f"{mf['load_end'][0]:.2f} at its end).")
    lines += [
        "",
        "| item | figure | gatewayd | peer | gatewayd ÷ peer | target | verdict | notes |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in report["table"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
        peer = _fmt(r["peer"], r["fmt"]) if r["peer"] is not None else ""
        lines.append(f"| {r['item']} | {r['figure']} | {_fmt(r['gatewayd'], r['fmt'])} | "
                     f"{peer} | {ratio} | {r['target']} | {r['verdict']} | {r['note']} |")
    lines.append("")
    for name, run in report["scripts"].items():
        took = f", {run['elapsed_s']:.0f} s" if "elapsed_s" in run else ""
        why = f": {run['reason']}" if run.get("reason") else ""
        mode = dig(run, "result.quick")
        mode = "" if mode is None else " (--quick)" if mode else " (full)"
        origin = f"; from {run['from']}" if run.get("from") else ""
        lines.append(f"- `bench/{name}.py`{mode}: {run['status']}{took}{why}{origin}")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "arch": platform.machine(), "cpu": model,
            "python": platform.python_version(), "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs of every script (a few minutes in all)")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json",
                        help="where the figures go (default: bench/results/latest.json)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--only", help="comma-separated script names (default: all)")
    parser.add_argument("--merge", type=Path,
                        help="an earlier run's JSON: its scripts' results fill in for the "
                             "scripts not run now (e.g. one script re-run with --only)")
    parser.add_argument("--timeout", type=float,
                        help="seconds before a script is stopped (default 300, full 3600)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCRIPTS)
    timeout = args.timeout or (300.0 if args.quick else 3600.0)
    out_dir = args.json.resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)

    began = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": args.quick, "machine": machine(), "load_start": os.getloadavg(),
        "scripts": {}}
    for name in names:
        run = run_script(name, quick=args.quick, out_dir=out_dir, timeout=timeout)
        report["scripts"][name] = run
        if run["status"] != "ok":
            print(f"== {name}: {run['status']}: {run['reason']}", file=sys.stderr, flush=True)
    report["load_end"] = os.getloadavg()
    report["elapsed_s"] = time.monotonic() - began
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        for name, run in earlier["scripts"].items():
            if name not in report["scripts"]:
                report["scripts"][name] = {**run, "from": f"{args.merge} of {earlier['date']}"}
        report["merged_from"] = {"path": str(args.merge), "date": earlier["date"],
                                 "quick": earlier["quick"], "load_start": earlier["load_start"],
                                 "load_end": earlier["load_end"]}
    report["table"] = table(report["scripts"])
    text = markdown(report)
    print(text)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"figures: {args.json}; each script's own report: {out_dir}/NAME.log",
          file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
