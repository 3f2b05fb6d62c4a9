"""The commands service with a real config and real files, the daemon replaced by a
small targets object: the fail-closed paths (audit log or replay journal not
writable), failures after acceptance, and the signed result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gatewayd.commands.actions import TunnelControl
from gatewayd.commands.service import CommandService
from gatewayd.config import load_config
from gatewayd.config.schema import Config
from gatewayd.driver import DeviceConfig, Driver
from gatewayd.identity import init_identity
from gatewayd.reading import Reading
from tests.commands.command_support import GATEWAY, claims, es256, write_cmd, write_trusted

OPS = es256("ops")


class Targets:
    """What the daemon offers, minus the daemon: device configs from the real config,
    no running driver, readings and a tunnel set by the test."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.readings: dict[tuple[str, str], Reading] = {}
        self.tunnel_control: TunnelControl | None = None

    def device_config(self, device: str) -> DeviceConfig | None:
        return self.config.devices.get(device)

    def driver(self, device: str) -> Driver | None:
        return None

    def last_reading(self, device: str, point: str) -> Reading | None:
        return self.readings.get((device, point))

    def tunnel(self) -> TunnelControl | None:
        return self.tunnel_control


def make_config(tmp_path: Path, commands: str = "") -> Config:
    trusted = write_trusted(tmp_path / "trusted", OPS)
    path = tmp_path / "gatewayd.toml"
    path.write_text(f"""
[gateway]
id = "{GATEWAY}"
state_dir = "{tmp_path / 'state'}"

[commands]
trusted_keys_dir = "{trusted}"
{commands}

[devices.boiler]
driver = "modbus"
url = "tcp://127.0.0.1:1502"
points = [
  {{ name = "setpoint", address = "hr:200", type = "int16", writable = {{ min = 20, max = 80 }} }},
]
""")
    return load_config(path)


async def run(service: CommandService, token: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await service.handle(
        f"gateways/{GATEWAY}/commands/t", token, uplink="cloud"))
    return data


def write_token(value: int = 42) -> bytes:
    return OPS.sign(claims(write_cmd("boiler", "setpoint", value), scope="write:boiler/*"))


async def test_failures_after_acceptance_and_the_signed_result(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    init_identity(config.identity, GATEWAY)
    targets = Targets(config)
    service = CommandService(config, targets)
    await service.open()

    result = await run(service, write_token())
    assert (result["status"], result["reason"]) == ("failed", "device not running")
    key = serialization.load_pem_private_key(config.identity.key_file.read_bytes(), None)
    signed = jwt.decode(result.pop("jws"), key.public_key(), algorithms=["ES256"])  # type: ignore[arg-type]
    assert {k: signed[k] for k in result} == result
    assert signed["iss"] == GATEWAY

    read = OPS.sign(claims({"action": "read", "device": "boiler", "point": "setpoint"},
                           scope="read:boiler/setpoint"))
    assert (await run(service, read))["reason"] == "no reading yet"
    targets.readings[("boiler", "setpoint")] = Reading("boiler", "setpoint", 42, "Cel",
                                                       1_800_000_000_000_000_000)
    read = OPS.sign(claims({"action": "read", "device": "boiler", "point": "setpoint"},
                           scope="read:boiler/setpoint"))
    got = await run(service, read)
    assert (got["status"], got["value"], got["unit"], got["reading_time"]) == (
        "ok", 42, "Cel", "2027-01-15T08:00:00.000Z")

    class BrokenTunnel:
        async def open(self, ttl: float) -> None:
            raise OSError("ssh is not installed")

        async def close(self) -> None:
            return None

    targets.tunnel_control = BrokenTunnel()
    opened = await run(service, OPS.sign(claims({"action": "tunnel.open", "ttl": 60},
                                                scope="tunnel:*")))
    assert (opened["status"], opened["reason"], opened["detail"]) == (
        "failed", "tunnel error", "ssh is not installed")
    health = service.health()
    assert (health["ok"], health["failed"], health["refused"]) == (1, 3, 0)
    assert health["reasons"]["failed"] == {"device not running": 1, "no reading yet": 1,
                                           "tunnel error": 1}
    assert health["result_signing"] == "ok"


async def test_results_are_unsigned_without_a_key(tmp_path: Path) -> None:
    service = CommandService(make_config(tmp_path), Targets(make_config(tmp_path)))
    await service.open()
    result = await run(service, write_token())
    assert "jws" not in result and result["reason"] == "device not running"
    assert service.health()["result_signing"].endswith("No such file or directory")


@pytest.mark.parametrize(("key", "reason"), [("audit_log", "audit log unavailable"),
                                             ("replay_file", "replay cache unavailable")])
async def test_no_command_acts_when_its_trace_cannot_be_written(
        tmp_path: Path, key: str, reason: str) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = make_config(tmp_path, f'{key} = "{blocker / "file.jsonl"}"')
    targets = Targets(config)
    acted: list[float] = []

    class Tunnel:
        async def open(self, ttl: float) -> None:
            acted.append(ttl)

        async def close(self) -> None:
            return None

    targets.tunnel_control = Tunnel()
    service = CommandService(config, targets)
    await service.open()
    token = OPS.sign(claims({"action": "tunnel.open", "ttl": 60}, scope="tunnel:open"))
    result = await run(service, token)
    assert (result["status"], result["reason"]) == ("refused", reason)
    assert acted == []
    # the jti is spent even so: the same token is not accepted once the disk is back
    assert (await run(service, token))["reason"] == "replayed"
