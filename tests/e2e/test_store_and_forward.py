"""Store-and-forward through the running daemon: ``gatewayd run`` with ``sim`` devices,
Debian's Mosquitto upstream over TLS, counted by a subscriber.

Every test counts readings exactly: the sim ``counter`` point numbers its readings
0, 1, 2, ... so a gap, a duplicate or a reordering is visible.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto, Received, Subscriber, free_port
from tests.peers.pki import Pki
from tests.support.daemon import DaemonProcess
from tests.support.flow import (
    GATEWAY,
    WAIT,
    committed_readings,
    config,
    counters,
    first_seen,
    health,
    produced,
    readings_of,
)

# The fixtures pki, broker and subscriber come from tests/support/flow.py.
pytestmark = pytest.mark.timeout(120)


def test_steady_flow_every_reading_arrives_exact_and_in_order(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    d = daemon_factory(config(pki, broker.tls_port, limit=300))
    d.start()
    d.wait_ready()
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= 300, WAIT, "300 counters")
    assert first_seen(counters(msgs)) == list(range(300))
    got = readings_of(msgs)
    temps = [r for r in got if r.point == "t"]
    assert {r.device for r in got} == {"meter"}
    assert len({r.time for r in temps}) == 300
    assert all(r.unit == "Cel" and 10.0 <= float(r.value) <= 20.0 for r in temps)  # type: ignore[arg-type]
    # The retained birth message says who we are.
    births = [m for m in msgs if m.topic == f"gateways/{GATEWAY}/status"]
    assert births and b'"online"' in births[0].payload
    st = d.wait_status(lambda s: health(s, "uplink:cloud")["acked_readings"] >= 600)
    assert produced(st) == 600
    assert st["buffer"]["drops_total"] == 0
    assert st["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0
    assert health(st, "uplink:cloud")["connected"] is True
    assert health(st, "uplink:cloud")["acked_per_s"] > 0


def test_broker_outage_everything_produced_meanwhile_arrives(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    d = daemon_factory(config(pki, broker.tls_port, poll="20ms", limit=400))
    d.start()
    d.wait_ready()
    subscriber.wait_until(lambda m: len(counters(m)) >= 20, WAIT, "flow before the outage")
    broker.stop()
    st = d.wait_status(lambda s: not health(s, "uplink:cloud")["connected"]
                       and s["buffer"]["uplinks"]["cloud"]["backlog_rows"] >= 100)
    assert health(st, "uplink:cloud")["last_error"]
    broker.start()
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= 400, WAIT, "all 400")
    assert first_seen(counters(msgs)) == list(range(400))
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    assert health(st, "uplink:cloud")["disconnects"] >= 1
    assert st["buffer"]["drops_total"] == 0


def test_kill_9_during_an_outage_loses_no_committed_reading(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    broker.stop()
    text = config(pki, broker.tls_port, poll="5ms")
    d = daemon_factory(text)
    d.start()
    d.wait_ready()
    d.wait_status(lambda s: s["buffer"]["committed_total"] >= 500)
    d.kill9()  # mid-ingest: the device is still producing
    before = committed_readings(d.state)
    values = [int(r.value) for r in before if r.point == "n"]  # type: ignore[arg-type]
    # What was committed is a prefix of what the device produced: nothing in between lost.
    assert values == list(range(len(values))) and len(values) >= 250
    temps = sum(1 for r in before if r.point == "t")

    # The operator's unit restarts the daemon with the same config; the broker returns.
    d2 = daemon_factory(text)
    d2.state = d.state
    restart_at = time.time_ns()
    d2.start()
    d2.wait_ready()
    broker.start()

    # The first run's readings are those stamped before the restart; its counter values
    # identify them exactly (SenML JSON times are float seconds, exact to about 1 us).
    def first_run(m: list[Received], point: str) -> list[Reading]:
        return [r for r in readings_of(m) if r.time < restart_at and r.point == point]

    msgs = subscriber.wait_until(
        lambda m: {int(r.value) for r in first_run(m, "n")} >= set(values),  # type: ignore[arg-type]
        WAIT, "every committed reading")
    old = [int(r.value) for r in first_run(msgs, "n")]  # type: ignore[arg-type]
    # Every committed reading arrived, in order, and nothing the first run never committed.
    assert first_seen(old) == values
    assert len({round(r.time / 1e3) for r in first_run(msgs, "t")}) >= temps


def test_buffer_cap_drops_the_oldest_and_counts_exactly_what_is_missing(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    broker.stop()
    d = daemon_factory(config(pki, broker.tls_port, poll="1ms", limit=40_000,
                              buffer_extra='max_size = "1MiB"'))
    d.start()
    d.wait_ready()
    st = d.wait_status(lambda s: health(s, "device:meter")["polls"] >= 40_000
                       and s["buffer"]["pending"] == 0 and s["buffer"]["drops_total"] > 0,
                       timeout=90)
    total = produced(st)
    dropped = st["buffer"]["drops_total"]
    assert total == 80_000
    assert st["buffer"]["drops"] == {"buffer_full": {"meter": dropped}}
    assert st["buffer"]["file_bytes"] <= 1024 * 1024
    broker.start()
    arrived: dict[str, set[int]] = defaultdict(set)

    def delivered(m: list[Received]) -> int:
        # one pass per check: count distinct (point, time) pairs
        return len({(r.point, r.time) for r in readings_of(m)})

    msgs = subscriber.wait_until(lambda m: delivered(m) >= total - dropped, WAIT * 2,
                                 "every kept reading")
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    assert delivered(subscriber.snapshot()) == total - dropped
    for r in readings_of(msgs):
        if r.point == "n":
            arrived["n"].add(int(r.value))  # type: ignore[arg-type]
    n = sorted(arrived["n"])
    # The oldest went first: what is left is the newest, without a hole.
    assert n == list(range(n[0], 40_000)) and n[0] > 0


def test_corrupt_buffer_file_is_moved_aside_and_flow_continues(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    d = daemon_factory(config(pki, broker.tls_port, limit=50))
    d.state.mkdir(parents=True)
    (d.state / "buffer.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)
    d.start()
    d.wait_ready()
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= 50, WAIT, "50 counters")
    assert first_seen(counters(msgs)) == list(range(50))
    st = d.status()
    moved = Path(st["buffer"]["recovered_corrupt"])
    assert moved.parent == d.state and moved.name.startswith("buffer.sqlite.corrupt-")
    assert moved.read_bytes().startswith(b"SQLite format 3\x00\xde\xad")
    text = d.ctl("status").stdout
    assert f"recovered from a corrupt file (moved to {moved})" in text


def test_two_uplinks_one_down_the_other_delivers_everything(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto,
        subscriber: Subscriber) -> None:
    dead = free_port()
    d = daemon_factory(config(pki, broker.tls_port, limit=300,
                              uplinks=(("cloud", broker.tls_port), ("backup", dead))))
    d.start()
    d.wait_ready()
    msgs = subscriber.wait_until(lambda m: len(set(counters(m))) >= 300, WAIT, "300 counters")
    assert first_seen(counters(msgs)) == list(range(300))
    st = d.wait_status(lambda s: s["buffer"]["uplinks"]["cloud"]["backlog_rows"] == 0)
    assert health(st, "uplink:cloud")["connected"] is True
    backup = health(st, "uplink:backup")
    assert backup["connected"] is False and backup["connect_attempts"] >= 2
    assert "refused" in backup["last_error"].lower()
    assert st["buffer"]["uplinks"]["backup"]["backlog_rows"] == 600
    # The dead uplink keeps every row it has not acknowledged.
    assert st["buffer"]["rows"] == 600


def test_wrong_ca_is_refused_and_shown_in_status(
        daemon_factory: type[DaemonProcess], pki: Pki, broker: Mosquitto) -> None:
    text = config(pki, broker.tls_port, limit=10).replace(str(pki.ca), str(pki.other_ca))
    d = daemon_factory(text)
    d.start()
    d.wait_ready()
    st = d.wait_status(lambda s: health(s, "uplink:cloud")["connect_attempts"] >= 3)
    up = health(st, "uplink:cloud")
    assert up["connected"] is False
    assert up["last_error"].startswith("TLS: certificate verify failed")
    assert "certificate verify failed" in d.ctl("status").stdout
