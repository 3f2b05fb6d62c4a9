"""The nearest Python peer: gatewayd and the ThingsBoard IoT Gateway 3.8.5 doing
the same Modbus job, one after the other, on the same machine.

The job: 10 Modbus TCP units (ids 1..10) on one pymodbus slave (tests/peers, in
a process of its own, counting every request it answers), 100 keys each
(80 uint16 and 10 float32 holding registers, one block hr:0..99), polled every
second, published to a local Mosquitto. For each gateway, after a warm-up
(every unit's values arrived, plus a few seconds), over a window:

- CPU% of one core (utime+stime of the process, all threads);
- RSS and PSS (``/proc/PID/smaps_rollup``) at the end of the window;
- Modbus requests per poll cycle (counted by the slave) and values published
  per second (counted by a subscriber on the broker);
- wake-ups per second (schedstat timeslices, all threads).

The peer runs from its own venv (``bench/setup-peers`` installs it under
``bench/.peers/thingsboard``; it pins pymodbus 3.9.2 and would pip-install it at
start-up otherwise). Two workarounds make it run against a plain broker: the
bench's subscriber answers its platform-only ``getSessionLimits`` RPC (without
an answer it polls the slave but never publishes), and ``remoteConfiguration`` is off
(shipped on, it reconfigures itself in a loop without a ThingsBoard server).

    .venv/bin/python bench/thingsboard_peer.py [--quick] [--json PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import (
    Daemon,
    SlaveProcess,
    ValueCounter,
    block_points,
    log,
    machine,
    median,
    memory,
    modbus_device_toml,
    rates,
    sample,
    uplink_toml,
    wait_until,
    write_json,
)
from tests.peers.mosquitto import Mosquitto

PEER_VENV = Path(__file__).resolve().parent / ".peers" / "thingsboard"
PEER_PYTHON = PEER_VENV / "bin" / "python"
UNITS = 10
KEYS = 100
TB_RPC_REQUEST = "v1/devices/me/rpc/request/"
TB_RPC_RESPONSE = "v1/devices/me/rpc/response/"
# What a ThingsBoard server answers to getSessionLimits when it sets no limits.
SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100,
                  "rateLimits": {"messages": "", "telemetryMessages": "",
                                 "telemetryDataPoints": ""}}


def peer_version() -> str | None:
    if not PEER_PYTHON.exists():
        return None
    out = subprocess.run([str(PEER_PYTHON), "-c", "import importlib.metadata as m;"
                          "print(m.version('thingsboard-gateway'), m.version('pymodbus'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def answer_session_limits(topic: str, payload: bytes) -> tuple[str, bytes] | None:
    """The bench subscriber's stand-in for the ThingsBoard server's one RPC."""
    if not topic.startswith(TB_RPC_REQUEST):
        return None
    try:
        method = json.loads(payload).get("method")
    except (ValueError, AttributeError):
        return None
    if method != "getSessionLimits":
        return None
    return TB_RPC_RESPONSE + topic[len(TB_RPC_REQUEST):], json.dumps(SESSION_LIMITS).encode()


# ---------------------------------------------------------------- the peer's config


def tb_keys() -> list[dict[str, Any]]:
    """block_points() in the peer's vocabulary: same addresses, types and order."""
    keys = []
    for p in block_points(KEYS):
        addr = p["address"].split(":")[1]
        keys.append({"tag": p["name"], "type": "16uint" if p["type"] == "uint16" else "32float",
                     "functionCode": 3, "objectsCount": 1 if p["type"] == "uint16" else 2,
                     "address": int(addr)})
    return keys


def tb_config_dir(root: Path, broker_port: int, slave_port: int) -> Path:
    """The shipped config with: the local broker, remoteConfiguration off, one Modbus
    connector (10 units x 100 keys at 1 s), logs at the shipped levels into ``root``."""
    shipped = next(PEER_VENV.glob("lib/python3*/site-packages/thingsboard_gateway/config"))
    conf = root / "config"
    conf.mkdir(parents=True)
    gw = json.loads((shipped / "tb_gateway.json").read_text())
    gw["thingsboard"].update({"host": "127.0.0.1", "port": broker_port,
                              "remoteConfiguration": False})
    gw["thingsboard"]["security"] = {"type": "accessToken", "accessToken": "bench-token"}
    gw["storage"].update({"data_folder_path": str(root / "data") + "/",
                          "data_file_path": str(root / "data") + "/"})
    gw["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    (conf / "tb_gateway.json").write_text(json.dumps(gw, indent=1))
    slaves = [{"host": "127.0.0.1", "port": slave_port, "type": "tcp", "method": "socket",
               "unitId": u, "deviceName": f"unit{u}", "deviceType": "default",
               "timeout": 35, "byteOrder": "BIG", "wordOrder": "BIG", "retries": 3,
               "retryOnEmpty": True, "retryOnInvalid": True, "pollPeriod": 1000,
               "connectAttemptTimeMs": 5000, "connectAttemptCount": 5,
               "waitAfterFailedAttemptsMs": 300000, "attributes": [],
               "timeseries": tb_keys(), "attributeUpdates": [], "rpc": []}
              for u in range(1, UNITS + 1)]
    (conf / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=1))
    logs = (shipped / "logs.json").read_text().replace("./logs/", str(root / "logs") + "/")
    (conf / "logs.json").write_text(logs)
    for extra in ("list.json", "statistics.json"):
        if (shipped / extra).exists():
            shutil.copy(shipped / extra, conf / extra)
    (root / "logs").mkdir()
    (root / "data").mkdir()
    return conf


class ThingsBoardGateway:
    def __init__(self, root: Path, broker_port: int, slave_port: int) -> None:
        self.root = root
        self.conf = tb_config_dir(root, broker_port, slave_port)
        self.out = root / "stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ, TB_GW_CONFIG_DIR=str(self.conf) + "/")
        env.pop("PYTHONPATH", None)
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(PEER_PYTHON), "-m", "thingsboard_gateway.tb_gateway"], cwd=self.root,
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.out.read_text(errors="replace")[-3000:] if self.out.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # its own shutdown path
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# ---------------------------------------------------------------- one measurement


def measure(pid: int, slave: SlaveProcess, counter: ValueCounter, *, alive: Any,
            warmup: float, window: float, devices: int) -> dict[str, Any]:
    """Wait for every unit's values, warm up, then one window of figures."""
    wait_until(lambda: len(counter.devices()) >= devices or not alive(), timeout=90,
               what=f"values from all {devices} units")
    if not alive():
        raise RuntimeError("the gateway exited")
    time.sleep(warmup)
    s0, r0, v0 = sample(pid), slave.count(), sample(slave.pid)
    time.sleep(window)
    s1, r1, v1 = sample(pid), slave.count(), sample(slave.pid)
    out: dict[str, Any] = rates(s0, s1)
    out["slave_cpu_pct"] = rates(v0, v1)["cpu_pct_ticks"]
    out.update(memory(pid))
    span = s1.at - s0.at
    values = counter.values_between(s0.at, s1.at)
    out["requests_per_s"] = (r1 - r0) / span
    out["values_per_s"] = values / span
    # A cycle reads every key once: requests per cycle = requests per value x keys.
    out["requests_per_cycle"] = (r1 - r0) / values * UNITS * KEYS if values else None
    return out


def run_gatewayd(broker: Mosquitto, slave: SlaveProcess, *, warmup: float,
                 window: float) -> dict[str, Any]:
    config = ('[gateway]\nid = "gw-bench"\n\n[logging]\nlevel = "info"\n\n'
              + uplink_toml(broker.port) + "\n"
              + "\n".join(modbus_device_toml(f"unit{u}", slave.port, u, block_points(KEYS))
                          for u in range(1, UNITS + 1)))
    counter = ValueCounter(broker.port, ["gateways/gw-bench/telemetry"])
    try:
        with Daemon(config, "tbcmp") as gw:
            ready = gw.start()
            out = measure(gw.pid, slave, counter, alive=lambda: gw.proc is not None
                          and gw.proc.poll() is None, warmup=warmup, window=window,
                          devices=UNITS)
            out["ready_s"] = ready
            return out
    finally:
        counter.close()


def run_peer(broker: Mosquitto, slave: SlaveProcess, *, warmup: float,
             window: float) -> dict[str, Any]:
    counter = ValueCounter(broker.port, [TB_RPC_REQUEST + "+", "v1/gateway/telemetry"],
                           answer=answer_session_limits)
    root = Path(tempfile.mkdtemp(prefix="tbpeer-"))
    tb = ThingsBoardGateway(root, broker.port, slave.port)
    try:
        began = time.monotonic()
        tb.start()
        try:
            out = measure(tb.pid, slave, counter, alive=tb.alive, warmup=warmup,
                          window=window, devices=UNITS)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}; its output:\n{tb.tail()}") from None
        out["first_values_s"] = min(at for at, _, n in counter.events if n) - began
        out["rpc_answered"] = counter.rpc_answered
        installs = "installing" in tb.tail().lower()
        out["pip_installed_at_start"] = installs
        return out
    finally:
        tb.stop()
        counter.close()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- driver


SUMMARY_KEYS = ("cpu_pct", "cpu_pct_ticks", "rss_mib", "pss_mib", "requests_per_cycle",
                "requests_per_s",
                "values_per_s", "wakeups_per_s", "voluntary_cs_per_s", "threads",
                "slave_cpu_pct")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: median([r[k] for r in runs]) for k in SUMMARY_KEYS
                           if all(k in r for r in runs)}
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run each")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--runs", type=int, help="runs of each gateway (median shown)")
    parser.add_argument("--window", type=float, help="seconds of each measurement window")
    parser.add_argument("--warmup", type=float, help="seconds after all units reported")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    window = args.window or (10.0 if args.quick else 60.0)
    warmup = args.warmup or (2.0 if args.quick else 10.0)

    report: dict[str, Any] = {"bench": "thingsboard_peer", "machine": machine(),
                              "quick": args.quick, "units": UNITS, "keys_per_unit": KEYS,
                              "poll_s": 1.0, "runs": runs, "window_s": window}
    version = peer_version()
    report["peer_version"] = version
    ours: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    peer_error = None if version else (f"not installed: {PEER_PYTHON} is missing "
                                       "(run bench/setup-peers)")
    with tempfile.TemporaryDirectory(prefix="tbbench-") as tmp, \
            Mosquitto(Path(tmp, "broker")) as broker, SlaveProcess(UNITS) as slave:
        for i in range(runs):
            log(f"gatewayd, {UNITS} x {KEYS} Modbus at 1 Hz: run {i + 1}/{runs}")
            ours.append(run_gatewayd(broker, slave, warmup=warmup, window=window))
            if peer_error is None:
                log(f"ThingsBoard gateway {version}: run {i + 1}/{runs}")
                try:
                    peer.append(run_peer(broker, slave, warmup=warmup, window=window))
                except RuntimeError as err:
                    peer_error = str(err)
                    log(f"the peer failed: {peer_error.splitlines()[0]}")
    report["gatewayd"] = summarise(ours)
    if peer:
        report["peer"] = summarise(peer)
    if peer_error:
        report["peer_error"] = peer_error
    report["load_end"] = os.getloadavg()
    print_report(report)
    write_json(args.json, report)


def print_report(r: dict[str, Any]) -> None:
    g, p = r["gatewayd"], r.get("peer")
    print(f"\n{r['units']} Modbus units x {r['keys_per_unit']} keys at 1 Hz into Mosquitto; "
          f"median of {r['runs']} run(s), {r['window_s']:g} s windows; load "
          f"{r['machine']['load'][0]:.2f}")
    print(f"   {'':26} {'gatewayd':>10} {'ThingsBoard':>12} {'peer/ours':>10}")
    rows = [("CPU, % of one core", "cpu_pct", ".1f"), ("RSS, MiB", "rss_mib", ".1f"),
            ("PSS, MiB", "pss_mib", ".1f"), ("requests per cycle", "requests_per_cycle", ".1f"),
            ("requests per s", "requests_per_s", ",.0f"),
            ("values published per s", "values_per_s", ",.0f"),
            ("wake-ups per s", "wakeups_per_s", ",.0f"), ("threads", "threads", ".0f"),
            ("the slave's CPU, %", "slave_cpu_pct", ".1f")]
    for label, key, fmt in rows:
        ours = g[key]
        if p and key in p:
            ratio = f"{p[key] / ours:10.1f}" if ours else f"{'':>10}"
            print(f"   {label:26} {ours:>10{fmt}} {p[key]:>12{fmt}} {ratio}")
        else:
            print(f"   {label:26} {ours:>10{fmt}} {'-':>12}")
    if "peer_error" in r:
        print(f"   the peer did not run: {r['peer_error'].splitlines()[0]}")


if __name__ == "__main__":
    main()
