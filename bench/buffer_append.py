"""Buffer throughput and memory, printed (never asserted).

1. Append rate: readings/s committed by Buffer (submit + commit loop, default
   commit_interval) vs raw sqlite3 executemany of the same rows in the same
   process (same table layout, WAL, synchronous=NORMAL), with the ratio.
2. RSS of a fresh process holding an empty buffer vs one holding 1,000,000
   backlogged rows, and the time for one reader to drain that backlog with
   read()/ack() batches of 500.

Usage: .venv/bin/python bench/buffer_append.py [--quick] [--json PATH] [--readings N]
       [--backlog N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading

DEVICES = 50
POINTS = 10
CHUNK = 500  # readings per submit, like a driver's poll of many points


def make_readings(n: int, t0: int = 1_700_000_000_000_000_000) -> list[Reading]:
    return [Reading(f"dev{i % DEVICES}", f"p{(i // DEVICES) % POINTS}", i * 0.25, "Cel",
                    t0 + i * 1000) for i in range(n)]


def config(path: Path, **kw: object) -> BufferConfig:
    base = dict(path=path, max_size=256 * 1024**2, commit_interval=0.2, durability="batched",
                max_pending=100_000)
    base.update(kw)
    return BufferConfig(**base)  # type: ignore[arg-type]


async def buffer_rate(path: Path, readings: list[Reading], durability: str) -> float:
    async with Buffer(config(path, durability=durability), uplinks={"cloud": ["*"]}) as buf:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(buf.run())
            start = time.perf_counter()
            since_commit = 0
            for i in range(0, len(readings), CHUNK):
                buf.submit(readings[i:i + CHUNK])
                since_commit += CHUNK
                if since_commit >= 50_000:  # half of max_pending: commits at once; wait for it
                    await buf.wait_for_data(buf.last_id())
                    since_commit = 0
                await asyncio.sleep(0)
            await buf.wait_for_data(len(readings) - 1)
            elapsed = time.perf_counter() - start
            runner.cancel()
        stats = await buf.stats()
    assert stats["committed_total"] == len(readings), stats
    assert stats["drops_total"] == 0, stats["drops"]
    print(f"  commits: {stats['commits']}, file: {stats['file_bytes'] / 1e6:.1f} MB")
    return len(readings) / elapsed


def raw_rate(path: Path, readings: list[Reading]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, series INTEGER NOT NULL,"
                 " t INTEGER NOT NULL, v ANY) STRICT")
    series: dict[tuple[str, str], int] = {}
    start = time.perf_counter()
    batch = 10_000
    for i in range(0, len(readings), batch):
        rows = []
        for j, r in enumerate(readings[i:i + batch], start=i + 1):
            sid = series.setdefault((r.device, r.point), len(series) + 1)
            rows.append((j, sid, r.time, r.value))
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(readings) / elapsed


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def hold(path: Path, drain: bool) -> dict[str, float]:
    """Run in a fresh process: open the buffer, touch it like an uplink would, report RSS."""
    async with Buffer(config(path), uplinks={"cloud": ["*"]}) as buf:
        batch = await buf.read("cloud", buf.cursor("cloud"), 500)
        await buf.ack("cloud", batch.upto)
        out = {"rows": (await buf.stats())["rows"], "rss_kib": rss_kib()}
        if drain:
            start = time.perf_counter()
            drained = len(batch.records)
            while True:
                batch = await buf.read("cloud", buf.cursor("cloud"), 500)
                if not batch.records:
                    break
                drained += len(batch.records)
                await buf.ack("cloud", batch.upto)
            out["drain_s"] = time.perf_counter() - start
            out["drained"] = drained
            out["rss_after_drain_kib"] = rss_kib()
    return out


def run_child(path: Path, drain: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(path)] + (["--drain"] if drain else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


async def fill(path: Path, n: int) -> None:
    async with Buffer(config(path), uplinks={"cloud": ["*"]}) as buf:
        for i in range(0, n, 50_000):
            buf.submit(make_readings(min(50_000, n - i), t0=1_700_000_000_000_000_000 + i))
            await buf.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100,000 readings, one round")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--readings", type=int)
    ap.add_argument("--backlog", type=int)
    ap.add_argument("--rounds", type=int, help="rounds of the append rates (median shown)")
    ap.add_argument("--child")
    ap.add_argument("--drain", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(hold(Path(args.child), args.drain))))
        return
    n_readings = args.readings or (100_000 if args.quick else 500_000)
    n_backlog = args.backlog or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 3)

    with tempfile.TemporaryDirectory() as tmp:
        readings = make_readings(n_readings)
        print(f"append: {n_readings:,} readings, {DEVICES * POINTS} series, chunks of {CHUNK}, "
              f"median of {rounds} round(s)")
        rates: dict[str, list[float]] = {"batched": [], "every-commit": [], "raw": []}
        for r in range(rounds):  # interleaved, so that a noisy spell hits all three
            for kind in ("batched", "every-commit"):
                rates[kind].append(asyncio.run(
                    buffer_rate(Path(tmp, f"{kind}{r}.sqlite"), readings, kind)))
            rates["raw"].append(raw_rate(Path(tmp, f"raw{r}.sqlite"), readings))
        ours, full, raw = (statistics.median(rates[k]) for k in ("batched", "every-commit",
                                                                 "raw"))
        print(f"  Buffer, durability batched:      {ours:12,.0f} readings/s committed")
        print(f"  Buffer, durability every-commit: {full:12,.0f} readings/s committed")
        print(f"  raw sqlite3 executemany:         {raw:12,.0f} rows/s")
        print(f"  ratio Buffer (batched) / raw:    {ours / raw:12.2f}")

        empty = Path(tmp, "empty.sqlite")
        asyncio.run(fill(empty, 1_000))
        backlog = Path(tmp, "backlog.sqlite")
        asyncio.run(fill(backlog, n_backlog))
        small = run_child(empty, drain=False)
        big = run_child(backlog, drain=True)
        print("memory (fresh process, buffer open, one read+ack):")
        for held in (small, big):
            print(f"  RSS with {held['rows']:>9,.0f} rows backlogged: "
                  f"{held['rss_kib'] / 1024:7.1f} MiB")
        print(f"drain: {big['drained']:,.0f} readings read+acked in {big['drain_s']:.1f} s "
              f"({big['drained'] / big['drain_s']:,.0f}/s, batches of 500); "
              f"RSS after: {big['rss_after_drain_kib'] / 1024:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps({
            "bench": "buffer_append", "quick": args.quick, "readings": n_readings,
            "rounds": rounds, "load": os.getloadavg(),
            "buffer_per_s": ours, "every_commit_per_s": full, "raw_per_s": raw,
            "ratio": ours / raw, "runs": rates,
            "rss_empty_mib": small["rss_kib"] / 1024, "rss_backlog_mib": big["rss_kib"] / 1024,
            "backlog": big["rows"], "drain_s": big["drain_s"],
            "drain_per_s": big["drained"] / big["drain_s"],
            "rss_after_drain_mib": big["rss_after_drain_kib"] / 1024}, indent=1) + "\n")


if __name__ == "__main__":
    main()
