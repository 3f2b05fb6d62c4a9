"""Fixtures of the command tests through the running daemon: TLS material, a real
Mosquitto, a pymodbus slave, operator keys, and a rig that runs ``gatewayd run``
with commands on and talks to it as the central side would (mosquitto_pub in,
a subscriber on the result topics)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.commands.command_support import GATEWAY, Operator, eddsa, es256, write_trusted
from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap
from tests.peers.mosquitto import Mosquitto, Subscriber
from tests.peers.pki import Pki, make_pki
from tests.support.daemon import DaemonProcess, gatewayctl

PREFIX = f"gateways/{GATEWAY}"
WAIT = 30.0
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"

CONFIG = """
[gateway]
id = "{gateway}"
state_dir = "{state}"

[logging]
status_interval = "1s"

[buffer]
commit_interval = "50ms"

[commands]
trusted_keys_dir = "{trusted}"
rate_limit = {{ count = 1000, per = "1m" }}
point_rate_limit = {{ count = 2, per = "1h" }}

[devices.boiler]
driver = "modbus"
url = "tcp://127.0.0.1:{modbus_port}"
unit_id = 1
poll = "200ms"
points = [
  {{ name = "setpoint", address = "hr:200", type = "int16", writable = {{ min = 20, max = 80 }} }},
  {{ name = "flow_temp", address = "hr:100", type = "uint16" }},
  {{ name = "limit", address = "hr:201", type = "uint16", writable = {{ min = 0, max = 100 }} }},
  {{ name = "broken", address = "hr:300", type = "uint16", writable = {{ min = 0, max = 9 }} }},
]

[uplinks.cloud]
url = "mqtts://127.0.0.1:{tls_port}"
ca_file = "{ca}"
auth = {{ type = "none" }}
commands = true
max_delay = "50ms"
backoff_initial = "50ms"
backoff_max = "300ms"
connect_timeout = "2s"
{extra}
"""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id=GATEWAY)


@pytest.fixture(scope="session")
def operators() -> dict[str, Operator]:
    return {"ops": es256("ops"), "ops-ed": eddsa("ops-ed"), "rogue": es256("rogue"),
            "late": es256("late")}


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", pki=pki) as m:
        yield m


@pytest.fixture
async def slave() -> AsyncIterator[PymodbusSlave]:
    # hr:300 answers every request with Modbus exception 4 (server device failure)
    async with PymodbusSlave({1: UnitMap(hr={200: 30, 100: 500, 201: 5},
                                         exceptions={("hr", 300): 4})}) as s:
        await s.start_tcp()
        yield s


def slave_writes(slave: PymodbusSlave) -> int:
    """Write requests the slave received (FC 6 and FC 16)."""
    return slave.count(unit=1, function=6) + slave.count(unit=1, function=16)


@dataclass
class Rig:
    """The daemon under test and the central side around it."""

    daemon: DaemonProcess
    broker: Mosquitto
    results: Subscriber
    trusted: Path
    state: Path

    async def publish(self, name: str, payload: bytes, *, retain: bool = False) -> None:
        args = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1",
                "-t", f"{PREFIX}/commands/{name}", "-s"]
        if retain:
            args.append("-r")
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await proc.communicate(payload)
        assert proc.returncode == 0, err

    async def result(self, name: str) -> dict[str, Any]:
        topic = f"{PREFIX}/commands/{name}/result"
        try:
            async with asyncio.timeout(WAIT):
                messages = await self.results.until(
                    lambda s: any(m.topic == topic for m in s.messages))
        except TimeoutError:
            raise AssertionError(f"no result on {topic}:\n{self.daemon.log_text()[-4000:]}"
                                 ) from None
        found = [m for m in messages if m.topic == topic]
        assert len(found) == 1, found
        assert not found[0].retain
        data: dict[str, Any] = json.loads(found[0].payload)
        return data

    async def command(self, name: str, token: bytes) -> dict[str, Any]:
        await self.publish(name, token)
        return await self.result(name)

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "commands" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def wait_subscribed(self, uplink: str = "cloud") -> dict[str, Any]:
        def ready(st: dict[str, Any]) -> bool:
            health = st["components"].get(f"uplink:{uplink}", {}).get("health", {})
            return bool((health.get("commands") or {}).get("subscribed"))

        return await asyncio.to_thread(self.daemon.wait_status, ready, WAIT)


def rig_config(pki: Pki, broker: Mosquitto, slave: PymodbusSlave, root: Path,
               extra: str = "") -> str:
    return CONFIG.format(gateway=GATEWAY, state=root / "state", trusted=root / "trusted",
                         modbus_port=slave.port, tls_port=broker.tls_port, ca=pki.ca,
                         extra=extra)


@pytest.fixture
async def make_rig(tmp_path: Path, pki: Pki, broker: Mosquitto, slave: PymodbusSlave,
                   operators: dict[str, Operator],
                   daemon_factory: type[DaemonProcess]) -> AsyncIterator[Any]:
    """``await make_rig(extra="")``: identity made, trusted keys ops and ops-ed
    installed, daemon started and subscribed to its command topics."""
    results = Subscriber(broker.port, f"{PREFIX}/commands/+/result")
    await asyncio.to_thread(results.start)

    async def make(extra: str = "", *, start: bool = True) -> Rig:
        root = tmp_path / "gw"
        trusted = write_trusted(root / "trusted", operators["ops"], operators["ops-ed"])
        daemon = daemon_factory(rig_config(pki, broker, slave, root, extra))
        init = await asyncio.to_thread(gatewayctl, "identity", "init", "--config",
                                       str(daemon.config_path))
        assert init.returncode == 0, init.stderr
        rig = Rig(daemon, broker, results, trusted, root / "state")
        if start:
            daemon.start()
            await asyncio.to_thread(daemon.wait_ready)
            await rig.wait_subscribed()
        return rig

    try:
        yield make
    finally:
        await asyncio.to_thread(results.stop)
