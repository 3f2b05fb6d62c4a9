"""Store-and-forward end to end: the real daemon against a Mosquitto bridge doing the
same job. Figures are printed (and written as JSON with ``--json``), never asserted.

gatewayd (``.venv/bin/gatewayd run``, config written here) polls ``sim`` devices
whose points are counters, buffers in SQLite and publishes SenML packs at QoS 1
to a local Mosquitto (persistence on, so a subscriber's session survives its
restarts); ``mosquitto_sub`` (QoS 1, persistent session) receives every pack
with its arrival time and the records are counted and, where it matters,
decoded and checked point by point (counter values: gaps and duplicates).

1. Throughput: readings/s delivered at QoS 1 with uplink ``max_records`` 1, 50
   and 500 while the sims offer ``--rate`` readings/s; also readings committed,
   backlog growth, the daemon's CPU use and readings per CPU-second (steadier
   than the rate on a machine shared with other work). Optionally over TLS.
2. Backlog drain: the broker is stopped; a reload adds sim devices with a poll
   ``limit`` that produce exactly ``--backlog`` readings, offered at
   ``--fill-rate``; then the broker starts and the time until all of them
   arrived is taken. RSS (VmRSS) before the outage, at a fifth of the backlog,
   with the backlog full, after the drain, and the peak (VmHWM).
3. Zero loss on kill -9: readings flow, the broker stops, ``kill -9`` of the
   daemon during the outage; what was committed is read from a copy of the
   buffer file; the daemon restarts, the broker too; every committed counter
   value must arrive: missing and duplicates are counted per point.
4. The peer: an edge Mosquitto (persistence on, default autosave, queue limit
   lifted) bridged at QoS 1 to an upstream Mosquitto, fed by ``mosquitto_pub -l``
   at QoS 1 with one reading per message: messages/s end to end, RSS of the
   edge holding a backlog during an upstream outage, drain time, and loss when
   the edge is killed with -9 during an outage.

    .venv/bin/python bench/store_forward.py --quick            # about 80 s
    .venv/bin/python bench/store_forward.py [--json out.json]  # full, about 7 min
    .venv/bin/python bench/store_forward.py --lock-timing      # + who holds the buffer lock
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_forward_rig import (
    MOSQUITTO_PUB,
    TELEMETRY,
    Arrival,
    BenchBroker,
    Gatewayd,
    RecordCounter,
    SimGroup,
    UplinkOptions,
    cpu_seconds,
    daemon_config,
    decode_records,
    rss_mib,
    wait_until,
)
from tests.peers.pki import Pki, make_pki

Result = dict[str, Any]
WARMUP = 3.0  # seconds of flow before a throughput window opens
PEER_TOPIC = "bench/telemetry"


def log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------- checks


def counter_check(records: Sequence[tuple[str, Any, float]], expected_max: dict[str, int],
                  *, prefix: str, before: float | None = None) -> Result:
    """Compare received counter values of points named ``prefix*`` (with a time
    before ``before``, if given) with 0..expected_max[point] each."""
    seen: dict[str, list[int]] = defaultdict(list)
    for name, value, t in records:
        if name.startswith(prefix) and (before is None or t < before):
            seen[name].append(int(value))
    expected = sum(m + 1 for m in expected_max.values())
    missing = duplicates = unexpected = 0
    for name in set(seen) | set(expected_max):
        values = seen.get(name, [])
        distinct = set(values)
        duplicates += len(values) - len(distinct)
        top = expected_max.get(name, -1)
        missing += sum(1 for v in range(top + 1) if v not in distinct)
        unexpected += sum(1 for v in distinct if v > top)
    return {"expected": expected, "received": sum(len(v) for v in seen.values()),
            "missing": missing, "duplicates": duplicates, "unexpected": unexpected}


def last_arrival(arrivals: Sequence[Arrival], needle: bytes) -> float:
    return max(a.at for a in arrivals if needle in a.payload)


def first_arrival(arrivals: Sequence[Arrival], needle: bytes, after: float) -> float:
    return min(a.at for a in arrivals if needle in a.payload and a.at >= after)


# ---------------------------------------------------------------- gatewayd


@contextmanager
def central_broker(tmp: Path, *, prefixes: Sequence[str],
                   pki: Pki | None = None) -> Iterator[tuple[BenchBroker, RecordCounter]]:
    """The central Mosquitto and the subscriber counting gatewayd's telemetry; both
    stopped on the way out, whatever happens."""
    broker = BenchBroker(tmp / "central", pki=pki, max_inflight=100)
    counter = RecordCounter(broker.port, TELEMETRY, tmp, prefixes=prefixes)
    with ExitStack() as stack:
        broker.start()
        stack.callback(broker.stop)
        counter.start()
        stack.callback(counter.stop)
        counter.wait_connected(broker)
        yield broker, counter


def gw_throughput(tmp: Path, *, max_records: int, rate: float, window: float,
                  tls: bool = False, lock_timing: bool = False) -> Result:
    """Readings/s sim → daemon → Mosquitto → subscriber in a steady window."""
    pki = make_pki(tmp / "pki", gateway_id="gw-bench") if tls else None
    with central_broker(tmp, prefixes=("",), pki=pki) as (broker, counter):
        return _gw_throughput(tmp, broker, counter, max_records=max_records, rate=rate,
                              window=window, lock_timing=lock_timing)


def _gw_throughput(tmp: Path, broker: BenchBroker, counter: RecordCounter, *,
                   max_records: int, rate: float, window: float, lock_timing: bool) -> Result:
    pki = broker.pki
    devices, points = 12, 50
    group = SimGroup("sim", devices, points, poll=devices * points / rate)
    uplink = UplinkOptions(broker.tls_port if pki else broker.port, max_records=max_records,
                           tls_ca=pki.ca if pki else None)
    with Gatewayd(tmp / "gw", daemon_config(uplink=uplink, groups=[group]),
                  lock_timing=lock_timing) as gw:
        gw.start()
        wait_until(lambda: counter.total() > 0, timeout=30, what="first readings")
        time.sleep(WARMUP)
        if lock_timing:
            gw.lock_times()  # counts start over here
        t0, s0, l0 = time.time(), gw.buffer_stats(), load_average()
        c0, m0 = cpu_seconds(gw.pid), cpu_seconds(gw.pid, main_thread=True)
        time.sleep(window)
        t1, s1 = time.time(), gw.buffer_stats()
        c1, m1 = cpu_seconds(gw.pid), cpu_seconds(gw.pid, main_thread=True)
        lock = lock_share(gw.lock_times(), t1 - t0) if lock_timing else None
        health = gw.uplink_health()
        delivered = counter.records_between(t0, t1)
        span = t1 - t0
        cpu = (c1 - c0) / span
        return {
            "max_records": max_records, "tls": pki is not None, "offered_per_s": group.rate,
            "committed_per_s": (s1["committed_total"] - s0["committed_total"]) / span,
            "delivered_per_s": delivered / span,
            "backlog_start": s0["uplinks"]["central"]["backlog_rows"],
            "backlog_end": s1["uplinks"]["central"]["backlog_rows"],
            "cpu": cpu, "loop_cpu": (m1 - m0) / span,
            "readings_per_cpu_s": delivered / span / cpu if cpu else None,
            "rss_mib": rss_mib(gw.pid), "drops": s1["drops_total"], "load": l0,
            "uplink_connects": health["connects"], "uplink_last_error": health["last_error"],
            "published_batches": health["published_batches"], "lock": lock,
        }


def lock_share(times: dict[str, dict[str, float]], span: float) -> Result:
    """Per holder of the buffer lock: acquisitions/s, mean hold and wait (ms), and the
    share of the window it was held."""
    return {by: {"per_s": t["n"] / span, "hold_ms": t["hold_s"] / t["n"] * 1e3,
                 "wait_ms": t["wait_s"] / t["n"] * 1e3, "held_share": t["hold_s"] / span}
            for by, t in sorted(times.items(), key=lambda kv: -kv[1]["hold_s"]) if t["n"]}


def gw_backlog_drain(tmp: Path, *, backlog: int, fill_rate: float) -> Result:
    """Fill a backlog of ``backlog`` readings during an outage; time the drain."""
    with central_broker(tmp, prefixes=("", "pace", "bulk")) as (broker, counter):
        return _gw_backlog_drain(tmp, broker, counter, backlog=backlog, fill_rate=fill_rate)


def _gw_backlog_drain(tmp: Path, broker: BenchBroker, counter: RecordCounter, *,
                      backlog: int, fill_rate: float) -> Result:
    uplink = UplinkOptions(broker.port, max_records=500)
    pace = SimGroup("pace", 1, 10, poll=0.1)  # 100 readings/s, all along
    devices, points = 20, 50
    bulk = SimGroup("bulk", devices, points, poll=devices * points / fill_rate,
                    limit=backlog // (devices * points))
    with Gatewayd(tmp / "gw", daemon_config(uplink=uplink, groups=[pace])) as gw:
        gw.start()
        wait_until(lambda: counter.total("pace") >= 200, timeout=30, what="pace readings")
        rss_before = rss_mib(gw.pid)
        broker.stop()
        wait_until(lambda: not gw.uplink_health()["connected"], timeout=30, what="outage seen")
        fill_start = time.monotonic()
        gw.reload(daemon_config(uplink=uplink, groups=[pace, bulk]))

        rss_part: list[tuple[int, float]] = []

        def filled() -> bool:
            st = gw.status()
            rows = st["buffer"]["uplinks"]["central"]["backlog_rows"]
            if not rss_part and rows >= backlog // 5:
                rss_part.append((rows, rss_mib(gw.pid)))
            states = [c["state"] for n, c in st["components"].items()
                      if n.startswith("device:bulk")]
            return (len(states) == bulk.devices and set(states) == {"finished"}
                    and st["buffer"]["pending"] == 0)

        wait_until(filled, timeout=600, what="backlog filled", interval=0.25)
        fill_s = time.monotonic() - fill_start
        stats = gw.buffer_stats()
        rss_full = rss_mib(gw.pid)
        dropped = sum(n for by_device in stats["drops"].values()
                      for dev, n in by_device.items() if dev.startswith("bulk"))
        expected = bulk.total - dropped
        log(f"backlog of {expected:,} committed in {fill_s:.1f}s ({dropped:,} dropped); "
            "draining")
        start = time.time()
        broker.start()
        counter.wait_count("bulk", expected, timeout=900)
        arrivals = counter.snapshot()
        done = last_arrival(arrivals, b'"n":"bulk')
        first = first_arrival(arrivals, b'"n":"bulk', start)
        wait_until(lambda: gw.buffer_stats()["uplinks"]["central"]["backlog_rows"] < 1000,
                   timeout=60, what="backlog acknowledged")
        time.sleep(1.0)
        rss_after, rss_peak = rss_mib(gw.pid), rss_mib(gw.pid, "VmHWM")
        check = counter_check(decode_records(arrivals),
                              {f"bulk{d:02d}/p{p:02d}": bulk.limit - 1
                               for d in range(bulk.devices) for p in range(bulk.points)},
                              prefix="bulk")
        return {
            "backlog": expected, "offered": bulk.total, "dropped": dropped,
            "fill_s": fill_s, "fill_per_s": bulk.total / fill_s,
            "file_mib": stats["file_bytes"] / 2**20,
            "drain_s": done - start, "first_after_s": first - start,
            "drain_per_s": expected / (done - start),
            "rss_before_mib": rss_before, "rss_full_mib": rss_full,
            "rss_after_mib": rss_after, "rss_peak_mib": rss_peak,
            "rss_part_rows": rss_part[0][0] if rss_part else None,
            "rss_part_mib": rss_part[0][1] if rss_part else None,
            "rss_per_100k_mib": ((rss_full - rss_part[0][1]) / (expected - rss_part[0][0]) * 1e5
                                 if rss_part and expected > rss_part[0][0] else None),
            "missing": check["missing"] - dropped, "duplicates": check["duplicates"],
        }


def gw_kill9(tmp: Path, *, rate: float, outage: float) -> Result:
    """kill -9 of the daemon during an outage: does every committed reading arrive?"""
    with central_broker(tmp, prefixes=("", "sim")) as (broker, counter):
        return _gw_kill9(tmp, broker, counter, rate=rate, outage=outage)


def _gw_kill9(tmp: Path, broker: BenchBroker, counter: RecordCounter, *, rate: float,
              outage: float) -> Result:
    devices, points = 10, 20
    group = SimGroup("sim", devices, points, poll=devices * points / rate)
    with Gatewayd(tmp / "gw", daemon_config(uplink=UplinkOptions(broker.port),
                                            groups=[group])) as gw:
        gw.start()
        wait_until(lambda: counter.total() > 0, timeout=30, what="first readings")
        time.sleep(2.0)
        broker.stop()
        time.sleep(outage)
        gw.kill9()
        killed = time.time()
        committed, last_id, rows = gw.committed_counters()
        log(f"killed with {rows:,} rows in the buffer; restarting")
        gw.start()
        start = time.time()
        broker.start()
        wait_until(lambda: (gw.uplink_health()["cursor"] or 0) >= last_id, timeout=300,
                   what="committed rows acknowledged", interval=0.25)
        drained = time.time() - start
        gw.stop()  # a clean stop: nothing more is produced
        counter.wait_quiet(1.0, timeout=30)
        records = decode_records(counter.snapshot())
        # Counter values restart at 0 with the daemon: the first run's readings are
        # those timed before the kill.
        received_max: dict[str, int] = {}
        for name, value, t in records:
            if t < killed and name.startswith("sim"):
                received_max[name] = max(received_max.get(name, -1), int(value))
        expected = {name: max(committed.get(name, -1), received_max.get(name, -1))
                    for name in set(committed) | set(received_max)}
        check = counter_check(records, expected, prefix="sim", before=killed)
        return {"offered_per_s": group.rate, "outage_s": outage,
                "buffered_at_kill": rows,
                "committed": check["expected"], "received": check["received"],
                "missing": check["missing"], "duplicates": check["duplicates"],
                "unexpected": check["unexpected"], "drain_after_restart_s": drained}


# ---------------------------------------------------------------- the peer


class Bridge:
    """An upstream Mosquitto, an edge Mosquitto bridged to it (topic bench/# out,
    QoS 1), and a counting subscriber on the upstream."""

    def __init__(self, tmp: Path) -> None:
        self.upstream = BenchBroker(tmp / "upstream", max_inflight=100)
        self.edge = BenchBroker(tmp / "edge", bridge_to=self.upstream.port,
                                bridge_topic="bench/#")
        self.counter = RecordCounter(self.upstream.port, "bench/#", tmp, prefixes=("",))
        self.tmp = tmp

    def __enter__(self) -> Bridge:
        with ExitStack() as stack:
            self.upstream.start()
            stack.callback(self.upstream.stop)
            self.counter.start()
            stack.callback(self.counter.stop)
            self.counter.wait_connected(self.upstream)
            self.edge.start()
            stack.callback(self.edge.stop)
            self.wait_bridge()
            stack.pop_all()
        return self

    def wait_bridge(self, start: int = 0) -> None:
        self.upstream.wait_log(lambda line: "New bridge connected" in line, start=start,
                               timeout=30)

    def outage(self) -> None:
        """Stop the upstream; return once the edge saw its bridge connection go."""
        mark = len(self.edge.log)
        self.upstream.stop()
        self.edge.wait_log(lambda line: ".upstream " in line and "connection" in line,
                           start=mark, timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.edge.stop()
        self.counter.stop()
        self.upstream.stop()


def peer_lines(path: Path, n: int) -> None:
    """One SenML record per line (= per message), each with a unique counter value."""
    t0 = time.time()
    with path.open("w") as f:
        for i in range(n):
            f.write(f'[{{"bn":"urn:dev:gw:gw-bench:","bt":{t0 + i * 1e-5:.6f},'
                    f'"n":"sim{i % 12:02d}/p{(i // 12) % 50:02d}","v":{i}}}]\n')


# Debian's mosquitto_pub 2.0.11 with -l reads its whole input ahead; past 65,535
# lines the message ids wrap, it takes an early PUBACK for the last one and exits
# with status 0, the rest unsent. So it is fed at most this many lines per process.
PUB_CHUNK = 50_000


def publish_lines(port: int, path: Path) -> float:
    """``mosquitto_pub -l -q 1`` of every line of ``path`` (one process per
    PUB_CHUNK lines, one after the other); returns the time it took."""
    lines = path.read_bytes().splitlines(keepends=True)
    start = time.monotonic()
    for i in range(0, len(lines), PUB_CHUNK):
        subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                        "-t", PEER_TOPIC, "-l"], input=b"".join(lines[i:i + PUB_CHUNK]),
                       check=True, timeout=900, capture_output=True)
    return time.monotonic() - start


def received_values(counter: RecordCounter) -> list[int]:
    return [int(v) for _, v, _ in decode_records(counter.snapshot())]


def peer_throughput(tmp: Path, *, messages: int) -> Result:
    lines = tmp / "lines.txt"
    peer_lines(lines, messages)
    with Bridge(tmp) as br:
        start = time.time()
        c0 = cpu_seconds(br.edge.pid)
        pub_s = publish_lines(br.edge.port, lines)
        br.counter.wait_count("", messages, timeout=600)
        done = max(a.at for a in br.counter.snapshot())
        cpu = (cpu_seconds(br.edge.pid) - c0) / (done - start)
        br.counter.wait_quiet(0.5, timeout=10)
        values = received_values(br.counter)
        return {"messages": messages, "publisher_s": pub_s,
                "delivered_per_s": messages / (done - start), "edge_cpu": cpu,
                "missing": messages - len(set(values)),
                "duplicates": len(values) - len(set(values))}


def peer_backlog_drain(tmp: Path, *, messages: int) -> Result:
    lines = tmp / "lines.txt"
    peer_lines(lines, messages)
    with Bridge(tmp) as br:
        rss_before = rss_mib(br.edge.pid)
        br.outage()
        fill_s = publish_lines(br.edge.port, lines)
        time.sleep(0.5)
        rss_full = rss_mib(br.edge.pid)
        log(f"peer holds {messages:,} queued messages; draining")
        mark = len(br.upstream.log)
        start = time.time()
        br.upstream.start()
        br.counter.wait_count("", messages, timeout=900)
        done = max(a.at for a in br.counter.snapshot())
        br.wait_bridge(mark)
        time.sleep(1.0)
        values = received_values(br.counter)
        return {"backlog": messages, "fill_s": fill_s, "drain_s": done - start,
                "drain_per_s": messages / (done - start),
                "rss_before_mib": rss_before, "rss_full_mib": rss_full,
                "rss_after_mib": rss_mib(br.edge.pid),
                "rss_peak_mib": rss_mib(br.edge.pid, "VmHWM"),
                "missing": messages - len(set(values)),
                "duplicates": len(values) - len(set(values))}


def peer_kill9(tmp: Path, *, messages: int) -> Result:
    lines = tmp / "lines.txt"
    peer_lines(lines, messages)
    with Bridge(tmp) as br:
        br.outage()
        publish_lines(br.edge.port, lines)
        time.sleep(0.5)
        br.edge.kill9()
        br.edge.start()
        mark = len(br.upstream.log)
        br.upstream.start()
        br.wait_bridge(mark)
        br.counter.wait_quiet(3.0, timeout=120)
        values = received_values(br.counter)
        return {"queued_at_kill": messages, "received": len(values),
                "missing": messages - len(set(values)),
                "duplicates": len(values) - len(set(values))}


# ---------------------------------------------------------------- driver


def runs(n: int, what: str, fn: Callable[[Path], Result]) -> list[Result]:
    out = []
    for i in range(n):
        log(f"{what}: run {i + 1}/{n}")
        with tempfile.TemporaryDirectory(prefix="sfbench-") as tmp:
            out.append(fn(Path(tmp)))
    return out


def med(results: Sequence[Result], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


# Counts of readings checked: summed over the runs, never a median.
TOTALS = ("missing", "duplicates", "unexpected", "dropped", "committed", "received",
          "queued_at_kill")


def summarise(results: Sequence[Result]) -> Result:
    """Median of every numeric field (the sum for TOTALS), and the runs themselves."""
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float))
            and not isinstance(v, bool)]
    out: Result = {}
    for k in keys:
        values = [r[k] for r in results if r[k] is not None]
        if values:
            out[k] = sum(values) if k in TOTALS else statistics.median(values)
    out["runs"] = list(results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run each, smaller backlogs (about 2 minutes)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--runs", type=int, help="runs per throughput figure (median shown)")
    parser.add_argument("--rate", type=float, default=60_000, help="readings/s the sims offer")
    parser.add_argument("--window", type=float, help="seconds of each throughput window")
    parser.add_argument("--batch-sizes", default="1,50,500", help="uplink max_records values")
    parser.add_argument("--backlog", type=int, help="readings buffered for the drain test")
    parser.add_argument("--fill-rate", type=float, default=50_000,
                        help="readings/s the sims offer while the backlog fills")
    parser.add_argument("--drain-runs", type=int, help="runs of the drain test")
    parser.add_argument("--outage", type=float, help="seconds of outage before kill -9")
    parser.add_argument("--peer-messages", type=int, help="messages of the peer's rate test")
    parser.add_argument("--peer-backlog", type=int, help="messages the peer holds in an outage")
    parser.add_argument("--peer-drain-runs", type=int,
                        help="runs of the peer's drain test (default: 1 above 200,000)")
    parser.add_argument("--peer-loss", type=int, default=50_000,
                        help="messages queued when the peer is killed")
    parser.add_argument("--lock-timing", action="store_true",
                        help="time the daemon's buffer lock in the throughput runs "
                             "(bench/buffer_lock_timing.py) and print who holds it")
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure throughput over TLS (default: on unless --quick)")
    args = parser.parse_args()
    quick = args.quick
    n_runs = args.runs or (1 if quick else 3)
    window = args.window or (5.0 if quick else 10.0)
    backlog = args.backlog or (200_000 if quick else 1_000_000)
    drain_runs = args.drain_runs or (1 if quick else 2)
    outage = args.outage or (3.0 if quick else 5.0)
    peer_messages = args.peer_messages or (50_000 if quick else 200_000)
    peer_backlog = args.peer_backlog or (50_000 if quick else backlog)
    peer_drain_runs = args.peer_drain_runs or (drain_runs if peer_backlog <= 200_000 else 1)
    tls = (not quick) if args.tls is None else args.tls
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    began = time.time()
    report: Result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "mosquitto": mosquitto_version(),
        "load_at_start": load_average(), "quick": quick, "source": source_state(),
        "settings": {"runs": n_runs, "rate": args.rate, "window_s": window, "backlog": backlog,
                     "drain_runs": drain_runs, "peer_drain_runs": peer_drain_runs,
                     "outage_s": outage,
                     "fill_rate": args.fill_rate,
                     "peer_messages": peer_messages, "peer_backlog": peer_backlog,
                     "peer_loss": args.peer_loss},
    }
    report["throughput"] = {
        str(mr): summarise(runs(n_runs, f"gatewayd max_records={mr}", partial(
            gw_throughput, max_records=mr, rate=args.rate, window=window,
            lock_timing=args.lock_timing)))
        for mr in sizes}
    if tls:
        report["throughput_tls"] = summarise(runs(n_runs, "gatewayd TLS max_records=500", partial(
            gw_throughput, max_records=500, rate=args.rate, window=window, tls=True)))
    report["drain"] = summarise(runs(drain_runs, f"gatewayd backlog {backlog:,}", partial(
        gw_backlog_drain, backlog=backlog, fill_rate=args.fill_rate)))
    report["kill9"] = summarise(runs(drain_runs, "gatewayd kill -9", partial(
        gw_kill9, rate=20_000, outage=outage)))
    report["peer_throughput"] = summarise(runs(n_runs, f"peer {peer_messages:,} messages",
                                               partial(peer_throughput, messages=peer_messages)))
    report["peer_drain"] = summarise(runs(peer_drain_runs, f"peer backlog {peer_backlog:,}",
                                          partial(peer_backlog_drain, messages=peer_backlog)))
    report["peer_kill9"] = summarise(runs(1, f"peer kill -9 with {args.peer_loss:,} queued",
                                          partial(peer_kill9, messages=args.peer_loss)))
    report["elapsed_s"] = time.time() - began
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print_report(report)


def source_state() -> str:
    """The commit measured, and whether the daemon's source differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             check=False)
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "gatewayd", "drivers")
    return f"{head} (daemon source modified)" if dirty else head


def mosquitto_version() -> str:
    out = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True,
                         check=False)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.replace("mosquitto version ", "")


def print_lock_timing(throughput: dict[str, Result]) -> None:
    """The buffer lock in the last run of each batch size (with --lock-timing)."""
    for name, t in throughput.items():
        lock = t["runs"][-1].get("lock")
        if not lock:
            continue
        run = t["runs"][-1]
        print(f"   buffer lock, max_records={name} (last run, {run['published_batches']:,} "
              f"batches published in all):")
        for by, x in list(lock.items())[:5]:
            print(f"      {by[:58]:58} {x['per_s']:>7,.1f}/s  held {x['hold_ms']:6.2f} ms"
                  f"  waited {x['wait_ms']:6.2f} ms  {x['held_share']:6.1%} of the time")


def print_report(r: Result) -> None:
    s = r["settings"]
    print(f"\nStore-and-forward bench, {r['date']}, nproc {r['nproc']} ({r['machine']}), "
          f"Python {r['python']}, Mosquitto {r['mosquitto']}, load average "
          f"{r['load_at_start']:.2f} at start, {r['elapsed_s']:.0f} s in all; "
          f"source {r['source']}")
    print(f"Medians of {s['runs']} run(s) per throughput figure, {s['drain_runs']} per drain "
          f"figure ({s['peer_drain_runs']} for the peer); loss counts are totals over the runs. "
          f"Sims offer {s['rate']:,.0f} readings/s; {s['window_s']:g} s windows.\n")
    print("1. gatewayd end to end at QoS 1: sim -> SQLite -> MQTT -> Mosquitto -> mosquitto_sub")
    print(f"   {'max_records':>11} {'delivered/s':>12} {'committed/s':>12} {'backlog +/-':>12} "
          f"{'CPU':>5} {'loop CPU':>8} {'readings/CPU-s':>15} {'RSS MiB':>8}   (each run)")
    rows = list(r["throughput"].items())
    if "throughput_tls" in r:
        rows.append(("500, TLS", r["throughput_tls"]))
    for name, t in rows:
        each = ", ".join(f"{x['delivered_per_s']:,.0f}" for x in t["runs"])
        print(f"   {name:>11} {t['delivered_per_s']:>12,.0f} {t['committed_per_s']:>12,.0f} "
              f"{t['backlog_end'] - t['backlog_start']:>+12,.0f} {t['cpu']:>5.2f} "
              f"{t['loop_cpu']:>8.2f} {t.get('readings_per_cpu_s', 0):>15,.0f} "
              f"{t['rss_mib']:>8.1f}   ({each})")
    print_lock_timing(r["throughput"])
    d, k = r["drain"], r["kill9"]
    pt, pd, pk = r["peer_throughput"], r["peer_drain"], r["peer_kill9"]
    print("\n2. gatewayd vs the peer (edge Mosquitto bridged to an upstream Mosquitto, "
          "fed by mosquitto_pub -l, one reading per message)")
    print(f"   {'':34} {'gatewayd':>12} {'peer':>12} {'ratio':>7}")

    def row(label: str, ours: float | None, peer: float | None, fmt: str = ",.0f",
            ratio: bool = True) -> None:
        if ours is None or peer is None:
            return
        q = f"{ours / peer:7.2f}" if ratio and peer else ""
        print(f"   {label:34} {ours:>12{fmt}} {peer:>12{fmt}} {q}")

    best_name, best = max(r["throughput"].items(), key=lambda kv: kv[1]["delivered_per_s"])
    row(f"readings/s (max_records={best_name})", best["delivered_per_s"], pt["delivered_per_s"])
    if "1" in r["throughput"]:
        row("readings/s (one per message)", r["throughput"]["1"]["delivered_per_s"],
            pt["delivered_per_s"])
    row("backlog held in the outage", d["backlog"], pd["backlog"], ratio=False)
    row("drain time, s", d["drain_s"], pd["drain_s"], ".1f", ratio=False)
    row("drain rate, readings/s", d["drain_per_s"], pd["drain_per_s"])
    row("RSS before the outage, MiB", d["rss_before_mib"], pd["rss_before_mib"], ".1f")
    row("RSS with the backlog, MiB", d["rss_full_mib"], pd["rss_full_mib"], ".1f")
    row("RSS after the drain, MiB", d["rss_after_mib"], pd["rss_after_mib"], ".1f")
    row("RSS peak (VmHWM), MiB", d["rss_peak_mib"], pd["rss_peak_mib"], ".1f")
    peer_slope = (pd["rss_full_mib"] - pd["rss_before_mib"]) / pd["backlog"] * 1e5
    row("RSS growth per 100k backlog, MiB", d.get("rss_per_100k_mib"), peer_slope, ".2f",
        ratio=False)
    row("missing after the drain", d["missing"], pd["missing"], ratio=False)
    row("duplicates after the drain", d["duplicates"], pd["duplicates"], ratio=False)
    row("kill -9 in an outage: queued", k["committed"], pk["queued_at_kill"], ratio=False)
    row("kill -9 in an outage: missing", k["missing"], pk["missing"], ratio=False)
    row("kill -9 in an outage: duplicates", k["duplicates"], pk["duplicates"], ratio=False)
    print(f"\n   gatewayd backlog: {d['offered']:,.0f} readings offered at "
          f"{s['fill_rate']:,.0f}/s by a reload adding 20 sim devices (poll limit), "
          f"committed at {d['fill_per_s']:,.0f}/s, {d['dropped']:,.0f} dropped (overflow), "
          f"file {d['file_mib']:.0f} MiB; first pack {d['first_after_s']:.1f} s after the "
          "broker start.")
    if d.get("rss_part_mib") is not None:
        print(f"   gatewayd RSS {d['rss_part_mib']:.1f} MiB at {d['rss_part_rows']:,.0f} rows "
              f"backlogged, {d['rss_full_mib']:.1f} MiB at {d['backlog']:,.0f}.")
    print(f"   gatewayd kill -9: {k['buffered_at_kill']:,.0f} rows in the buffer after "
          f"{s['outage_s']:g} s of outage at {k['offered_per_s']:,.0f} readings/s; "
          f"{k['committed']:,.0f} committed by the killed daemon in all (checked per point, "
          f"{len(k['runs'])} run(s)); "
          f"drained {k['drain_after_restart_s']:.1f} s after the broker came back.")
    print("   peer: max_queued_messages 0 (no limit), persistence true, autosave_interval "
          "1800 (default), bridge QoS 1, cleansession false, restart_timeout 1.")


if __name__ == "__main__":
    main()
