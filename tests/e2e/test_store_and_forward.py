"""Store-and-forward through the running daemon: ``gatewayd run`` with ``sim`` devices,
Debian's Mosquitto upstream over TLS, counted by a subscriber.

Every test counts readings exactly: the sim ``counter`` point numbers its readings
0, 1, 2, ... so a gap, a duplicate or a reordering is visible.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd import senml
from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto, Received, Subscriber, free_port
from tests.peers.pki import Pki, make_pki
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

GATEWAY = "gw-e2e"
TELEMETRY = f"gateways/{GATEWAY}/telemetry"
WAIT = 30.0

HEAD = """
[gateway]
id = "gw-e2e"

[logging]
status_interval = "1s"

[buffer]
commit_interval = "50ms"
{buffer_extra}

[devices.meter]
driver = "sim"
poll = "{poll}"
limit = {limit}
points = [
  {{ name = "n", signal = "counter" }},
  {{ name = "t", signal = "sine", min = 10.0, max = 20.0, period = "1s", unit = "Cel" }},
]
"""

UPLINK = """
[uplinks.{name}]
url = "mqtts://127.0.0.1:{port}"
ca_file = "{ca}"
auth = {{ type = "none" }}
max_delay = "50ms"
backoff_initial = "50ms"
backoff_max = "300ms"
connect_timeout = "2s"
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id=GATEWAY)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    # Persistence on: the subscriber's session and its queued messages survive a restart,
    # so what the gateway publishes right after the broker returns is never missed.
    with Mosquitto(tmp_path / "broker", pki=pki, persistence=True) as b:
        yield b


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, f"gateways/{GATEWAY}/#", client_id="e2e-counter",
                     clean=False)
    sub.start()
    yield sub
    sub.stop()


def config(pki: Pki, port: int, *, poll: str = "10ms", limit: int = 0,
           buffer_extra: str = "", uplinks: tuple[tuple[str, int], ...] = ()) -> str:
    text = HEAD.format(poll=poll, limit=limit, buffer_extra=buffer_extra)
    for name, up_port in uplinks or (("cloud", port),):
        text += UPLINK.format(name=name, port=up_port, ca=pki.ca)
    return text


def readings_of(messages: list[Received]) -> list[Reading]:
    return [r for m in messages if m.topic == TELEMETRY for r in senml.decode(m.payload)]


def counters(messages: list[Received]) -> list[int]:
    """The values of the ``meter/n`` counter, in arrival order."""
    return [int(r.value) for r in readings_of(messages) if r.point == "n"]  # type: ignore[arg-type]


def first_seen(values: list[int]) -> list[int]:
    """Arrival order without redeliveries (QoS 1 is at least once)."""
    seen: set[int] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


def ms(ns: int) -> int:
    return round(ns / 1e6)


def health(st: dict[str, Any], component: str) -> dict[str, Any]:
    return st["components"][component]["health"]  # type: ignore[no-any-return]


def produced(st: dict[str, Any]) -> int:
    return int(health(st, "device:meter")["readings"])


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


def committed_readings(state: Path) -> list[Reading]:
    """What the buffer file holds for uplink ``cloud`` (read with the daemon dead)."""
    async def read() -> list[Reading]:
        cfg = BufferConfig(path=state / "buffer.sqlite", max_size=256 * 2**20,
                           commit_interval=0.05, durability="batched", max_pending=100_000)
        buf = Buffer(cfg, uplinks={"cloud": ("*",)}, priorities={})
        await buf.open()
        try:
            batch = await buf.read("cloud", buf.cursor("cloud"), 1_000_000)
            return [reading for _, reading in batch.records]
        finally:
            await buf.close()
    return asyncio.run(read())


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
    killed_at = max(r.time for r in before)

    # The operator's unit restarts the daemon with the same config; the broker returns.
    d2 = daemon_factory(text)
    d2.state = d.state
    d2.start()
    d2.wait_ready()
    broker.start()

    # SenML JSON carries times as float seconds: compare to the millisecond (the
    # device polls every 5 ms, so a millisecond still tells every reading apart).
    def pre_kill(m: list[Received]) -> set[tuple[str, int]]:
        return {(r.point, ms(r.time)) for r in readings_of(m) if ms(r.time) <= ms(killed_at)}

    want = {(r.point, ms(r.time)) for r in before}
    msgs = subscriber.wait_until(lambda m: pre_kill(m) >= want, WAIT, "every committed reading")
    assert pre_kill(msgs) == want
    # Per point, the first run's readings still arrive in time order.
    old = [r for r in readings_of(msgs) if ms(r.time) <= ms(killed_at) and r.point == "n"]
    assert first_seen([int(r.value) for r in old]) == values  # type: ignore[arg-type]


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
