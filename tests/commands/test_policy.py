"""Commands, scopes, write limits, the replay cache and the rate limits: pure parts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatewayd.commands import errors as r
from gatewayd.commands.audit import AuditLog, read_audit
from gatewayd.commands.config import CommandsConfig, RateLimit
from gatewayd.commands.errors import CommandRefused
from gatewayd.commands.gate import CommandGate
from gatewayd.commands.keys import load_trusted_keys
from gatewayd.commands.policy import (
    ReadCommand,
    TunnelClose,
    TunnelOpen,
    WriteCommand,
    WriteLimits,
    check_value,
    parse_command,
    scope_allows,
    write_limits,
)
from gatewayd.commands.ratelimit import RateLimiter
from gatewayd.commands.replay import ReplayCache, ReplayJournal
from gatewayd.driver import DeviceConfig
from tests.commands.command_support import GATEWAY, claims, es256, write_cmd, write_trusted

NOW = 1_800_000_000.0


def refusal(fn: Any, *args: Any, **kw: Any) -> CommandRefused:
    with pytest.raises(CommandRefused) as info:
        fn(*args, **kw)
    return info.value


@pytest.mark.parametrize(("cmd", "expected"), [
    (write_cmd("boiler", "setpoint", 42), WriteCommand("boiler", "setpoint", 42)),
    (write_cmd("boiler", "pump", True), WriteCommand("boiler", "pump", True)),
    ({"action": "read", "device": "boiler", "point": "flow"}, ReadCommand("boiler", "flow")),
    ({"action": "tunnel.open", "ttl": 600}, TunnelOpen(600.0)),
    ({"action": "tunnel.close"}, TunnelClose()),
])
def test_commands_parse(cmd: dict[str, Any], expected: object) -> None:
    assert parse_command({"cmd": cmd}, max_tunnel_ttl=3600) == expected


@pytest.mark.parametrize(("claims_", "reason"), [
    ({}, r.MISSING_CLAIM),
    ({"cmd": "write"}, r.BAD_COMMAND),
    ({"cmd": {"action": "reboot"}}, r.UNKNOWN_ACTION),
    ({"cmd": {"action": "write", "device": "boiler", "point": "sp"}}, r.BAD_COMMAND),
    ({"cmd": {"action": "write", "device": "a/b", "point": "sp", "value": 1}}, r.BAD_COMMAND),
    ({"cmd": {"action": "write", "device": "", "point": "sp", "value": 1}}, r.BAD_COMMAND),
    ({"cmd": {"action": "write", "device": "b", "point": "sp", "value": None}}, r.BAD_VALUE),
    ({"cmd": {"action": "write", "device": "b", "point": "sp", "value": [1]}}, r.BAD_VALUE),
    ({"cmd": {"action": "write", "device": "b", "point": "sp", "value": float("nan")}},
     r.BAD_VALUE),
    ({"cmd": {"action": "write", "device": "b", "point": "sp", "value": 1, "x": 2}},
     r.BAD_COMMAND),
    ({"cmd": {"action": "tunnel.open"}}, r.BAD_COMMAND),
    ({"cmd": {"action": "tunnel.open", "ttl": 0}}, r.BAD_COMMAND),
    ({"cmd": {"action": "tunnel.open", "ttl": 7200}}, r.BAD_COMMAND),
    ({"cmd": {"action": "tunnel.open", "ttl": True}}, r.BAD_COMMAND),
])
def test_bad_commands_are_named(claims_: dict[str, Any], reason: str) -> None:
    assert refusal(parse_command, claims_, max_tunnel_ttl=3600).reason == reason


@pytest.mark.parametrize(("granted", "required", "allowed"), [
    (["write:boiler/setpoint"], "write:boiler/setpoint", True),
    (["write:boiler/*"], "write:boiler/setpoint", True),
    (["write:boil*"], "write:boiler/setpoint", True),
    (["write:*"], "write:boiler/setpoint", True),
    (["write:boiler/setpoint"], "write:boiler/pump", False),
    (["write:boiler/*"], "write:air/fan", False),
    (["read:boiler/*"], "write:boiler/setpoint", False),
    (["*:boiler/setpoint"], "write:boiler/setpoint", False),  # the action is literal
    (["*"], "write:boiler/setpoint", False),
    (["write"], "write:boiler/setpoint", False),
    (["tunnel:*"], "tunnel:open", True),
    (["tunnel:open"], "tunnel:close", False),
    ([], "tunnel:open", False),
])
def test_scopes(granted: list[str], required: str, allowed: bool) -> None:
    assert scope_allows(granted, required) is allowed


@dataclass(frozen=True)
class Range:
    min: float | None
    max: float | None


@dataclass(frozen=True)
class Point:
    name: str
    writable: Range | None


@dataclass(frozen=True)
class Options:
    points: tuple[Point, ...]


OPTIONS = Options((Point("setpoint", Range(20, 80)), Point("flow", None),
                   Point("pump", Range(None, None))))


def test_write_limits_come_from_the_declared_points() -> None:
    assert write_limits(OPTIONS, "boiler", "setpoint") == WriteLimits(20.0, 80.0)
    assert write_limits(OPTIONS, "boiler", "pump") == WriteLimits(None, None)
    assert refusal(write_limits, OPTIONS, "boiler", "flow").reason == r.NOT_WRITABLE
    assert refusal(write_limits, OPTIONS, "boiler", "nope").reason == r.UNKNOWN_POINT
    assert refusal(write_limits, object(), "sim", "x").reason == r.NOT_WRITABLE
    limits = WriteLimits(20.0, 80.0)
    check_value(WriteCommand("boiler", "setpoint", 20), limits)
    check_value(WriteCommand("boiler", "setpoint", 80.0), limits)
    check_value(WriteCommand("boiler", "setpoint", True), limits)  # the driver checks kinds
    for value in (19.99, 81, -1e308):
        err = refusal(check_value, WriteCommand("boiler", "setpoint", value), limits)
        assert err.reason == r.OUT_OF_RANGE and "[20, 80]" in err.detail


def test_replay_cache_expires_entries_and_is_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    cache.add("a", NOW + 10)
    cache.add("b", NOW + 20)
    assert cache.seen("a", NOW) and cache.seen("b", NOW) and not cache.seen("c", NOW)
    assert cache.full(NOW)
    assert not cache.full(NOW + 15)  # "a" expired and was purged
    assert not cache.seen("a", NOW + 15) and len(cache) == 1


def test_replay_journal_survives_reload_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "replay.jsonl"
    journal = ReplayJournal(path)
    cache = ReplayCache()
    journal.load(cache, NOW)
    for i in range(5):
        journal.append(f"j{i}", NOW + 10 * i)
        cache.add(f"j{i}", NOW + 10 * i)
    with path.open("a") as f:
        f.write('{"jti": "torn", "unt')  # a crash mid-write
    again = ReplayCache()
    reloaded = ReplayJournal(path)
    reloaded.load(again, NOW + 15)
    assert sorted(again.entries()) == ["j2", "j3", "j4"]
    assert reloaded.skipped == 1
    assert [json.loads(line)["jti"] for line in path.read_text().splitlines()] == \
        ["j2", "j3", "j4"]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_rate_limiter_refills_at_count_per_period() -> None:
    limiter = RateLimiter(RateLimit(count=2, per=60.0))
    assert limiter.allow("p", 0.0) and limiter.allow("p", 0.0)
    assert not limiter.allow("p", 1.0)
    assert limiter.allow("q", 1.0)  # another key has its own bucket
    assert limiter.allow("p", 31.0) and not limiter.allow("p", 31.0)


def test_gate_order_replay_then_rate_then_scope(tmp_path: Path) -> None:
    op = es256("ops")
    keys = load_trusted_keys(write_trusted(tmp_path / "t", op))
    cfg = CommandsConfig(rate_limit=RateLimit(3, 60.0), point_rate_limit=RateLimit(1, 60.0))
    gate = CommandGate(cfg, gateway_id=GATEWAY, keys=keys, replay=ReplayCache())
    device = DeviceConfig(name="boiler", driver="x", priority=0, enabled=True, options=OPTIONS)

    def admit(token: bytes, now: float = NOW) -> Any:
        return gate.admit(token, now=now, monotonic=now,
                          device_config=lambda name: device if name == "boiler" else None,
                          tunnel_configured=lambda: False)

    ok = op.sign(claims(write_cmd("boiler", "setpoint", 42), scope="write:boiler/*", now=NOW))
    accepted = admit(ok)
    assert accepted.command == WriteCommand("boiler", "setpoint", 42)
    assert accepted.replay_until == accepted.token.exp + cfg.clock_skew
    assert refusal(admit, ok).reason == r.REPLAYED
    second = op.sign(claims(write_cmd("boiler", "setpoint", 43), scope="write:boiler/*",
                            now=NOW))
    assert refusal(admit, second).reason == r.RATE_LIMITED  # per point: 1 a minute
    tunnel = op.sign(claims({"action": "tunnel.open", "ttl": 60}, scope="tunnel:*", now=NOW))
    assert refusal(admit, tunnel).reason == r.TUNNEL_NOT_CONFIGURED
    other = op.sign(claims(write_cmd("air", "fan", 1), scope="write:boiler/*", now=NOW))
    assert refusal(admit, other).reason == r.RATE_LIMITED  # 3 a minute in all
    later = NOW + 60
    assert refusal(admit, op.sign(claims(write_cmd("air", "fan", 1), scope="write:boiler/*",
                                         now=later)), later).reason == r.OUT_OF_SCOPE
    assert refusal(admit, op.sign(claims(write_cmd("air", "fan", 1), scope="write:air/*",
                                         now=later)), later).reason == r.UNKNOWN_DEVICE


def test_audit_log_rotates_and_reads_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path, max_size=1000)
    for i in range(30):
        log.append({"time": f"2026-11-23T19:{i:02d}:00.000Z", "n": i, "status": "ok"})
    assert log.rotations >= 1
    assert path.stat().st_size <= 1000 and log.rotated.stat().st_size <= 1000
    records = list(read_audit(path))
    assert [rec["n"] for rec in records] == list(range(30 - len(records), 30))
    since = list(read_audit(path, since=1_795_460_400.0 + 25 * 60))  # 2026-11-23T19:25Z
    assert [rec["n"] for rec in since] == [25, 26, 27, 28, 29]
