"""Footprint and idle cost of the running daemon, printed (never asserted).

The daemon is started as systemd starts it (``Type=notify``: the bench binds
``NOTIFY_SOCKET`` and times the exec to ``READY=1``), its uplink connected to a
local Mosquitto.

1. Footprint: RSS and PSS (``/proc/PID/smaps_rollup``) once settled after READY,
   with the demo config (demo/run_demo.py: two sim devices, four points) and with
   20 sim devices configured (5 points each, 1 s), each daemon alone; start-up
   time to READY of each start.
2. Idle cost: three daemons side by side (each costs a few % at most, so they
   hardly disturb one another): nothing to do (an uplink and no device), the demo
   config, and one Modbus device of 100 points at 1 Hz against a local pymodbus
   slave (one process of its own). Over windows of 60 s (``--quick``: shorter):
   CPU% of one core, wake-ups per second (schedstat timeslices) and voluntary
   context switches per second, all threads summed. RSS at the end.

    .venv/bin/python bench/footprint.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import (
    Daemon,
    SlaveProcess,
    block_points,
    log,
    machine,
    median,
    memory,
    modbus_device_toml,
    rates,
    sample,
    uplink_toml,
    write_json,
)
from tests.peers.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
HEAD = '[gateway]\nid = "gw-bench"\n\n[logging]\nlevel = "info"\n\n'


def demo_config(port: int) -> str:
    """The demo's own config text (demo/run_demo.py), pointed at ``port``."""
    spec = importlib.util.spec_from_file_location("run_demo", ROOT / "demo" / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.CONFIG.format(port=port)
    return text


def devices20_config(port: int) -> str:
    points = ('[\n  { name = "temp", signal = "sine", min = 18.0, max = 24.0, period = "60s",'
              ' unit = "Cel" },\n'
              '  { name = "humidity", signal = "random_walk", min = 30.0, max = 60.0,'
              ' seed = 7, unit = "%RH" },\n'
              '  { name = "pulses", signal = "counter" },\n'
              '  { name = "valve", signal = "step", min = 0, max = 1, period = "10s" },\n'
              '  { name = "level", signal = "sine", min = 0.0, max = 100.0, period = "300s" },\n]')
    devices = "\n".join(f'[devices.dev{i:02d}]\ndriver = "sim"\npoll = "1s"\npoints = {points}\n'
                        for i in range(20))
    return HEAD + uplink_toml(port) + "\n" + devices


def idle_config(port: int) -> str:
    return HEAD + uplink_toml(port)


def modbus100_config(port: int, slave_port: int) -> str:
    return (HEAD + uplink_toml(port) + "\n"
            + modbus_device_toml("meter", slave_port, 1, block_points(100)))


def footprint(config: str, *, runs: int, settle: float, name: str) -> dict[str, Any]:
    """Each run: start alone, READY, settle, read memory, stop."""
    out: list[dict[str, Any]] = []
    for i in range(runs):
        log(f"footprint {name}: run {i + 1}/{runs}")
        with Daemon(config, name) as gw:
            ready = gw.start()
            time.sleep(settle)
            mem = memory(gw.pid)
            mem["ready_s"] = ready
            mem["threads"] = sample(gw.pid).threads
            out.append(mem)
    keys = ("rss_mib", "pss_mib", "pss_anon_mib", "hwm_mib", "ready_s", "threads")
    summary: dict[str, Any] = {k: median([r[k] for r in out]) for k in keys}
    summary["ready_s_min"] = min(r["ready_s"] for r in out)
    summary["ready_s_max"] = max(r["ready_s"] for r in out)
    summary["runs"] = out
    return summary


def idle_cost(configs: dict[str, str], *, windows: int, window: float, settle: float,
              requests: dict[str, SlaveProcess]) -> dict[str, Any]:
    """``requests``: the slave each Modbus config polls, for requests/s per window."""
    daemons = {name: Daemon(text, name) for name, text in configs.items()}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    try:
        with ThreadPoolExecutor(len(daemons)) as pool:  # started together: READY not timed
            list(pool.map(lambda gw: gw.start(), daemons.values()))
        log(f"idle cost: {', '.join(configs)} side by side; settling {settle:g} s")
        time.sleep(settle)
        for w in range(windows):
            log(f"idle cost: window {w + 1}/{windows} of {window:g} s")
            first = {name: sample(gw.pid) for name, gw in daemons.items()}
            counts = {name: slave.count() for name, slave in requests.items()}
            time.sleep(window)
            for name, gw in daemons.items():
                r = rates(first[name], sample(gw.pid))
                r.update(memory(gw.pid))
                if name in requests:
                    r["requests_per_s"] = (requests[name].count() - counts[name]) / window
                results[name].append(r)
    finally:
        for gw in daemons.values():
            gw.close()
    keys = ("cpu_pct", "cpu_pct_ticks", "wakeups_per_s", "voluntary_cs_per_s",
            "involuntary_cs_per_s", "rss_mib", "threads", "requests_per_s")
    return {name: {**{k: median([r[k] for r in runs]) for k in keys if k in runs[0]},
                   "runs": runs}
            for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--starts", type=int, help="starts of the demo config (median shown)")
    parser.add_argument("--window", type=float, help="seconds of each idle-cost window")
    parser.add_argument("--windows", type=int, help="idle-cost windows (median shown)")
    args = parser.parse_args()
    quick = args.quick
    starts = args.starts or (3 if quick else 7)
    window = args.window or (4.0 if quick else 60.0)
    windows = args.windows or 3
    settle = 2.0 if quick else 15.0

    report: dict[str, Any] = {"bench": "footprint", "machine": machine(), "quick": quick,
                              "settle_s": settle, "window_s": window, "windows": windows}
    with tempfile.TemporaryDirectory(prefix="fpbench-") as tmp, \
            Mosquitto(Path(tmp, "broker")) as broker, SlaveProcess(1) as slave:
        report["footprint"] = {
            "demo": footprint(demo_config(broker.port), runs=starts, settle=settle,
                              name="demo"),
            "devices20": footprint(devices20_config(broker.port), runs=max(1, starts // 3),
                                   settle=settle, name="dev20"),
        }
        report["idle"] = idle_cost({"nothing": idle_config(broker.port),
                                    "demo": demo_config(broker.port),
                                    "modbus100": modbus100_config(broker.port, slave.port)},
                                   windows=windows, window=window, settle=settle,
                                   requests={"modbus100": slave})
    report["load_end"] = os.getloadavg()
    print_report(report)
    write_json(args.json, report)


def print_report(r: dict[str, Any]) -> None:
    fp, idle = r["footprint"], r["idle"]
    print(f"\nFootprint (each daemon alone, {r['settle_s']:g} s after READY; load "
          f"{r['machine']['load'][0]:.2f})")
    print(f"   {'config':22} {'RSS MiB':>8} {'PSS MiB':>8} {'threads':>8} {'READY s':>8} "
          f"{'(min-max)':>12} {'starts':>6}")
    for name, label in (("demo", "demo (2 sim, 4 points)"), ("devices20", "20 sim devices")):
        f = fp[name]
        print(f"   {label:22} {f['rss_mib']:8.1f} {f['pss_mib']:8.1f} {f['threads']:8.0f} "
              f"{f['ready_s']:8.2f} {f['ready_s_min']:5.2f}-{f['ready_s_max']:<6.2f} "
              f"{len(f['runs']):6d}")
    print(f"\nIdle cost (side by side, median of {r['windows']} windows of {r['window_s']:g} s)")
    print(f"   {'config':22} {'CPU %':>7} {'wake-ups/s':>11} {'vol. cs/s':>10} "
          f"{'RSS MiB':>8} {'threads':>8}")
    for name, label in (("nothing", "nothing to do"), ("demo", "demo config"),
                        ("modbus100", "100 Modbus points 1 Hz")):
        i = idle[name]
        print(f"   {label:22} {i['cpu_pct']:7.2f} {i['wakeups_per_s']:11.1f} "
              f"{i['voluntary_cs_per_s']:10.1f} {i['rss_mib']:8.1f} {i['threads']:8.0f}")
    print(f"   Modbus requests/s at the slave: {idle['modbus100']['requests_per_s']:.2f}")


if __name__ == "__main__":
    main()
