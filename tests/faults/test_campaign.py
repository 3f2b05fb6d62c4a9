"""The fault campaign: the daemon under load while its world misbehaves.

Each scenario runs ``gatewayd run`` with a counting ``sim`` device against Debian's
Mosquitto over TLS, injects one kind of fault, and prints what was sent, received,
dropped and duplicated (``pytest -s`` shows it). Bounded in time by default;
``--long`` runs the long forms (a minute of broker flapping, more kills).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto, Subscriber
from tests.peers.pki import Pki
from tests.support.daemon import DaemonProcess
from tests.support.flow import (
    WAIT,
    committed_readings,
    config,
    counters,
    first_seen,
    health,
    produced,
    readings_of,
)
from tests.uplink.proxy import ThreadedProxy

pytestmark = pytest.mark.timeout(300)

MAX_RECORDS, MAX_INFLIGHT = 500, 16  # the uplink defaults: the in-flight window


def report(scenario: str, **figures: Any) -> None:
    print(f"\n[fault campaign] {scenario}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


def duplicates(values: list[int]) -> int:
    """Redeliveries among counter values of one run (each value is one reading)."""
    return len(values) - len(set(values))


def test_broker_flapping_under_load_loses_nothing(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber, long_faults: bool) -> None:
    polls = 6000 if long_faults else 1200  # at 10 ms: a minute, or twelve seconds
    d = daemon_factory(config(pki, broker.tls_port, poll="10ms", limit=polls))
    d.start()
    d.wait_ready()
    flaps = 0
    while flaps < 3 or health(d.status(), "device:meter")["polls"] < polls:
        subscriber.wait_until(lambda m: len(m) > 0, WAIT, "traffic")
        acked = health(d.status(), "uplink:cloud")["acked_readings"]
        d.wait_status(lambda s, a=acked: health(s, "uplink:cloud")["acked_readings"] > a)
        broker.stop()
        flaps += 1
        d.wait_status(lambda s: not health(s, "uplink:cloud")["connected"])
        broker.start()
        d.wait_status(lambda s: health(s, "uplink:cloud")["connected"])
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= polls, WAIT, "every reading")
    got = readings_of(msgs)
    assert first_seen(counters(msgs)) == list(range(polls))
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    assert st["buffer"]["drops_total"] == 0
    assert health(st, "uplink:cloud")["disconnects"] >= flaps
    dup = duplicates(counters(msgs))
    assert dup <= (flaps + 1) * MAX_RECORDS * MAX_INFLIGHT
    report("broker flapping", flaps=flaps, sent=produced(st), received=len(got),
           dropped=0, duplicated_polls=dup)


def test_repeated_kill_9_during_ingest_and_outage_loses_no_committed_reading(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber, long_faults: bool) -> None:
    kills = 40 if long_faults else 20
    rng = random.Random(20261127)
    text = config(pki, broker.tls_port, poll="5ms")
    state: Path | None = None
    runs: list[tuple[int, int]] = []  # each run's wall-clock span, in ns

    def polls_of(readings: list[Reading]) -> list[tuple[int, int]]:
        """(run, counter value) of each ``n`` reading: one per poll, exact."""
        out = []
        for r in readings:
            if r.point == "n":
                run = next(i for i, (lo, hi) in enumerate(runs) if lo <= r.time <= hi)
                out.append((run, int(r.value)))  # type: ignore[arg-type]
        return out

    committed: set[tuple[int, int]] = set()
    for k in range(kills):
        outage = k >= kills // 2
        if outage and broker.proc is not None:
            broker.stop()
        d = daemon_factory(text)
        if state is not None:
            d.state = state
        state = d.state
        started = time.time_ns()
        d.start()
        d.wait_ready()
        base = d.status()["buffer"]["committed_total"]
        target = base + rng.randrange(20, 600)
        d.wait_status(lambda s, t=target: s["buffer"]["committed_total"] >= t)
        d.kill9()
        runs.append((started, time.time_ns()))
        committed |= set(polls_of(committed_readings(state)))
        d.close()

    # The last start: the broker is back; everything committed must arrive.
    if broker.proc is None:
        broker.start()
    last = daemon_factory(text.replace('poll = "5ms"', 'poll = "5ms"\nenabled = false'))
    last.state = state  # type: ignore[assignment]
    last.start()
    last.wait_ready()

    msgs = subscriber.wait_until(lambda m: set(polls_of(readings_of(m))) >= committed,
                                 WAIT * 2, "every committed reading")
    st = last.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    assert st["buffer"]["rows"] == 0
    got = polls_of(readings_of(msgs))
    # Per run, what arrived is a prefix of what the device counted: only the tail that was
    # not committed yet when the process died is missing, never a reading in between.
    for run in range(kills):
        values = {v for r, v in got if r == run}
        assert values and values == set(range(len(values))), run
    dup = len(got) - len(set(got))
    assert dup <= (kills + 2) * MAX_RECORDS * MAX_INFLIGHT
    report("kill -9", kills=kills, committed_polls=len(committed),
           received_polls=len(set(got)), lost_committed=len(committed - set(got)),
           duplicated_polls=dup)


def _tmpfs_available(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {where}"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def test_full_disk_under_load_keeps_running_and_counts_drops(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber, tmp_path: Path) -> None:
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if not _tmpfs_available(mnt):
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available")

    def on_small_disk(argv: list[str]) -> list[str]:
        # A 2 MiB file system under a 64 MiB buffer: the disk fills, not the buffer.
        cmd = " ".join(f"'{a}'" for a in argv)
        return ["unshare", "-rm", "sh", "-c",
                f"mount -t tmpfs -o size=2m tmpfs {mnt} && exec {cmd}"]

    broker.stop()
    polls = 6000
    d = daemon_factory(config(pki, broker.tls_port, poll="1ms", limit=polls, constants=18,
                              buffer_extra=f'path = "{mnt}/buffer.sqlite"\nmax_size = "64MiB"'),
                       wrapper=on_small_disk)
    d.start()
    d.wait_ready()
    st = d.wait_status(lambda s: health(s, "device:meter")["polls"] >= polls
                       and s["buffer"]["pending"] == 0, timeout=120)
    sent = produced(st)
    assert sent == polls * 20
    # The buffer works to the room the file system has, not to max_size: it drops its
    # oldest readings (counted) instead of filling the disk.
    assert st["buffer"]["effective_max_size"] < 2 * 1024 * 1024 < st["buffer"]["max_size"]
    assert st["buffer"]["file_bytes"] <= st["buffer"]["effective_max_size"]
    drops = st["buffer"]["drops"]
    assert set(drops) <= {"buffer_full", "disk_full", "overflow"} and drops
    dropped = st["buffer"]["drops_total"]
    assert dropped > 0 and st["components"]["buffer"]["state"] == "running"
    # Nothing was acknowledged yet: every reading is in the file or counted as dropped.
    assert st["buffer"]["rows"] + dropped == sent
    broker.start()
    want = st["buffer"]["rows"]

    msgs = subscriber.wait_until(lambda m: len(readings_of(m)) >= want, WAIT * 2,
                                 "every kept reading")
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    # One connection, never dropped: no redelivery, so exactly the kept readings arrive.
    assert health(st, "uplink:cloud")["disconnects"] == 0
    assert len(readings_of(subscriber.snapshot())) == want
    got = counters(msgs)
    report("full disk", sent=sent, kept=want, received=len(readings_of(msgs)),
           dropped=dropped, duplicated_polls=duplicates(got))


def test_stalled_broker_times_out_and_reconnects(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    with ThreadedProxy(broker.tls_port) as proxy:
        d = daemon_factory(config(pki, proxy.port, poll="20ms", limit=600,
                                  uplink_extra='keepalive = "5s"'))
        d.start()
        d.wait_ready()
        subscriber.wait_until(lambda m: len(counters(m)) >= 20, WAIT, "flow before the stall")
        proxy.stall()  # TCP stays up; nothing passes: a hung broker
        st = d.wait_status(lambda s: health(s, "uplink:cloud")["disconnects"] >= 1
                           and health(s, "uplink:cloud")["connect_attempts"] >= 3, timeout=60)
        up = health(st, "uplink:cloud")
        assert not up["connected"]
        # The connect through the stalled proxy gets no CONNACK: connect_timeout fires.
        assert up["last_error"] == f"no answer from 127.0.0.1:{proxy.port} within 2s"
        proxy.unstall()
        msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= 600, WAIT * 2, "all")
    assert first_seen(counters(msgs)) == list(range(600))
    report("stalled broker", sent=1200, received=len(readings_of(msgs)),
           last_error=repr(up["last_error"]), duplicated_polls=duplicates(counters(msgs)))


LIBFAKETIME = next((p for p in (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/arm-linux-gnueabihf/faketime/libfaketime.so.1") if os.path.exists(p)), None)


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs Debian's libfaketime (package faketime)")
def test_wall_clock_jumps_do_not_disturb_polling_or_delivery(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber, tmp_path: Path) -> None:
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    polls = 300
    d = daemon_factory(config(pki, broker.tls_port, poll="50ms", limit=polls), extra_env=env)
    d.start()
    d.wait_ready()
    d.wait_status(lambda s: health(s, "device:meter")["polls"] >= 80)
    offset.write_text("-3600\n")  # the wall clock jumps an hour back
    at = health(d.status(), "device:meter")["polls"]
    d.wait_status(lambda s: health(s, "device:meter")["polls"] >= at + 80)
    offset.write_text("+7200\n")  # and then two hours forward
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= polls, WAIT * 2, "all")
    assert first_seen(counters(msgs)) == list(range(polls))
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    # Polling runs on the monotonic clock: a jump is neither a stall (an hour back would
    # stop polling for an hour) nor a burst of "missed" cycles (two hours forward at 50 ms
    # would be 144,000). A loaded machine may still skip some.
    assert health(st, "device:meter")["late_cycles"] < 5000
    # Timestamps are the wall clock as it was: they follow the jumps.
    n = [r for r in readings_of(msgs) if r.point == "n"]
    by_value = {int(r.value): r.time for r in n}  # type: ignore[arg-type]
    steps = [(by_value[v + 1] - by_value[v]) / 1e9 for v in range(polls - 1)]
    assert min(steps) < -3000 and max(steps) > 6000
    report("wall clock jumps", sent=polls * 2, received=len(readings_of(msgs)),
           late_cycles=health(st, "device:meter")["late_cycles"],
           jumps_seen_in_timestamps=f"{min(steps):.0f}s/{max(steps):+.0f}s")


def test_reload_under_load_loses_no_reading(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    other = ('\n[devices.other]\ndriver = "sim"\npoll = "{p}"\n'
             'points = [{{ name = "x", signal = "counter" }}]\n')
    polls = 1000
    base = config(pki, broker.tls_port, poll="10ms", limit=polls)
    d = daemon_factory(base + other.format(p="50ms"))
    d.start()
    d.wait_ready()
    reloads = 5
    for i in range(reloads):
        d.wait_status(lambda s, i=i: health(s, "device:meter")["polls"] >= (i + 1) * 100)
        d.write_config(base + other.format(p=f"{50 + 10 * (i + 1)}ms"))
        d.signal(signal.SIGHUP)
        d.wait_status(lambda s, i=i: s["reloads"] == i + 1)
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= polls, WAIT, "all")
    assert first_seen(counters(msgs)) == list(range(polls))
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    # Only the changed device was restarted; the meter ran through every reload.
    assert st["components"]["device:meter"]["restarts"] == 0
    assert st["last_reload"]["restarted"] == ["device:other"]
    assert st["buffer"]["drops_total"] == 0
    report("reload under load", reloads=reloads, sent=produced(st),
           received=sum(1 for r in readings_of(msgs) if r.device == "meter"),
           dropped=0, duplicated_polls=duplicates(counters(msgs)))
