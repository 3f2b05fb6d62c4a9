"""Shared by the end-to-end and fault tests: a daemon config with a counting ``sim``
device, a TLS Mosquitto with a persistent subscriber, and ways to count what arrived.

The sim ``counter`` point numbers its readings 0, 1, 2, ... per run, so a gap, a
duplicate or a reordering is visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd import senml
from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto, Received, Subscriber
from tests.peers.pki import Pki, make_pki

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
{more_points}]
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
{uplink_extra}
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
           buffer_extra: str = "", uplinks: tuple[tuple[str, int], ...] = (),
           constants: int = 0, uplink_extra: str = "", tail: str = "") -> str:
    """A daemon config: device ``meter`` (``n`` counter, ``t`` sine, and ``constants`` more
    constant points ``c0``...) and TLS uplinks (default: one, ``cloud``, to ``port``)."""
    more = "".join(f'  {{ name = "c{i}", signal = "constant", value = {i}.5 }},\n'
                   for i in range(constants))
    text = HEAD.format(poll=poll, limit=limit, buffer_extra=buffer_extra, more_points=more)
    for name, up_port in uplinks or (("cloud", port),):
        text += UPLINK.format(name=name, port=up_port, ca=pki.ca, uplink_extra=uplink_extra)
    return text + tail


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
