"""Signed commands through the running daemon: ``gatewayd run`` with a Modbus device
on a pymodbus slave, its uplink on Debian's Mosquitto over TLS, commands published
with mosquitto_pub and results read from the broker.

Each refusal is checked four ways: the result message names the reason, the
audit log has it, the metrics count it, and the slave received no write.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gatewayd import senml
from tests.commands.command_support import (
    GATEWAY,
    Operator,
    alg_none,
    claims,
    hs256_with_public_key,
    tampered,
    write_cmd,
    write_trusted,
)
from tests.commands.conftest import PREFIX, WAIT, Rig, slave_writes
from tests.peers.modbus_pymodbus import PymodbusSlave
from tests.peers.mosquitto import Mosquitto, Subscriber
from tests.peers.pki import Pki

pytestmark = pytest.mark.timeout(180)


def metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{label_text}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in metrics"
    return float(found.group(1))


def gateway_public_key(rig: Rig) -> Any:
    key = serialization.load_pem_private_key(
        (rig.state / "identity" / "gateway.key").read_bytes(), None)
    return key.public_key()


async def telemetry_value(sub: Subscriber, name: str, value: float) -> None:
    def seen(s: Subscriber) -> bool:
        return any(r.name == name and r.value == value
                   for m in s.messages if m.topic == f"{PREFIX}/telemetry"
                   for r in senml.decode(m.payload))

    async with asyncio.timeout(WAIT):
        await sub.until(seen)


async def test_signed_write_lands_and_every_forgery_is_refused(
        make_rig: Any, slave: PymodbusSlave, operators: dict[str, Operator]) -> None:
    rig: Rig = await make_rig()
    ops, ed, rogue = operators["ops"], operators["ops-ed"], operators["rogue"]
    telemetry = Subscriber(rig.broker.port, f"{PREFIX}/telemetry")
    await asyncio.to_thread(telemetry.start)
    try:
        # -- a valid write lands on the slave and reads back through the daemon
        valid = ops.sign(claims(write_cmd("boiler", "setpoint", 42),
                                scope="write:boiler/setpoint", jti="write-42"))
        ok = await rig.command("ok", valid)
        assert {k: ok[k] for k in ("jti", "status", "reason", "action", "gateway", "device",
                                    "point", "value")} == {
            "jti": "write-42", "status": "ok", "reason": None, "action": "write",
            "gateway": GATEWAY, "device": "boiler", "point": "setpoint", "value": 42}
        signed = jwt.decode(ok["jws"], gateway_public_key(rig), algorithms=["ES256"])
        assert signed["iss"] == GATEWAY and signed["status"] == "ok"
        assert signed["jti"] == "write-42"
        assert await slave.values(1, "hr", 200, 1) == [42]
        assert slave_writes(slave) == 1
        await telemetry_value(telemetry, "boiler/setpoint", 42)
        read = await rig.command("read", ed.sign(claims(
            {"action": "read", "device": "boiler", "point": "setpoint"},
            scope="read:boiler/*", jti="read-1")))
        assert (read["status"], read["value"]) == ("ok", 42)

        # -- each forgery or misuse: its own reason, nothing written
        now = time.time()
        base = write_cmd("boiler", "setpoint", 79)
        cases: list[tuple[str, bytes, str]] = [
            ("forged", tampered(valid, jti="forged-1", cmd=base), "bad signature"),
            ("untrusted", rogue.sign(claims(base, scope="write:boiler/*", jti="rogue-1")),
             "unknown key"),
            ("audience", ops.sign(claims(base, scope="write:boiler/*", aud="gw-other",
                                         jti="aud-1")), "wrong audience"),
            ("expired", ops.sign(claims(base, scope="write:boiler/*", now=now - 600,
                                        jti="exp-1")), "expired"),
            ("replay", valid, "replayed"),
            ("scope", ops.sign(claims(base, scope="write:boiler/limit read:boiler/*",
                                      jti="scope-1")), "out of scope"),
            ("notwritable", ops.sign(claims(write_cmd("boiler", "flow_temp", 1),
                                            scope="write:boiler/*", jti="nw-1")),
             "not writable"),
            ("range", ops.sign(claims(write_cmd("boiler", "setpoint", 81),
                                      scope="write:boiler/*", jti="range-1")), "out of range"),
            ("malformed", b"this is not a token", "malformed token"),
            ("none", alg_none(claims(base, scope="write:boiler/*", jti="none-1"), "ops"),
             "algorithm not allowed"),
            ("confusion", hs256_with_public_key(claims(base, scope="write:boiler/*",
                                                       jti="hs-1"), ops.public_pem, "ops"),
             "algorithm not allowed"),
            ("tunnel", ed.sign(claims({"action": "tunnel.open", "ttl": 60},
                                      scope="tunnel:*", jti="tunnel-1")),
             "tunnel not configured"),
        ]
        for name, token, reason in cases:
            result = await rig.command(name, token)
            assert (result["status"], result["reason"]) == ("refused", reason), (name, result)
            assert result["detail"], name
        assert slave_writes(slave) == 1
        assert await slave.values(1, "hr", 200, 1) == [42]

        # -- the per-point rate limit (2 an hour here): the third write is refused
        for i, value in enumerate((10, 11, 12)):
            result = await rig.command(f"limit{i}", ops.sign(claims(
                write_cmd("boiler", "limit", value), scope="write:boiler/limit",
                jti=f"limit-{i}")))
            expected = ("ok", None) if i < 2 else ("refused", "rate limit exceeded")
            assert (result["status"], result["reason"]) == expected
        assert slave_writes(slave) == 3
        assert await slave.values(1, "hr", 201, 1) == [11]

        # -- accepted, sent, and refused by the device: failed, with the device's words
        broken = await rig.command("broken", ops.sign(claims(
            write_cmd("boiler", "broken", 1), scope="write:boiler/*", jti="broken-1")))
        assert (broken["status"], broken["reason"]) == ("failed", "device error")
        assert "exception" in broken["detail"].lower()
        assert slave_writes(slave) == 4
    finally:
        await asyncio.to_thread(telemetry.stop)

    # -- the audit log: one final record per command, plus "accepted" before acting
    audit = rig.audit()
    finals = [rec for rec in audit if rec["status"] != "accepted"]
    assert len(finals) == 2 + len(cases) + 3 + 1
    by_jti = {rec["jti"]: rec for rec in finals if rec["jti"] and rec["status"] != "refused"}
    assert by_jti["write-42"]["value"] == 42 and by_jti["write-42"]["kid"] == "ops"
    assert by_jti["write-42"]["sub"] == "operator@example.net"
    refused = [(rec["jti"], rec["reason"]) for rec in finals if rec["status"] == "refused"]
    assert refused == [("forged-1", "bad signature"), ("rogue-1", "unknown key"),
                       ("aud-1", "wrong audience"), ("exp-1", "expired"),
                       ("write-42", "replayed"), ("scope-1", "out of scope"),
                       ("nw-1", "not writable"), ("range-1", "out of range"),
                       (None, "malformed token"), ("none-1", "algorithm not allowed"),
                       ("hs-1", "algorithm not allowed"),
                       ("tunnel-1", "tunnel not configured"),
                       ("limit-2", "rate limit exceeded")]
    accepted = [rec["jti"] for rec in audit if rec["status"] == "accepted"]
    assert accepted == ["write-42", "read-1", "limit-0", "limit-1", "broken-1"]
    assert finals[-1]["status"] == "failed" and finals[-1]["reason"] == "device error"
    audit_text = json.dumps(audit)
    assert valid.decode().split(".")[2] not in audit_text and "eyJ" not in audit_text
    cli = await asyncio.to_thread(rig.daemon.ctl, "audit", "--config",
                                  str(rig.daemon.config_path), "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == audit
    text = await asyncio.to_thread(rig.daemon.ctl, "audit", "--config",
                                   str(rig.daemon.config_path), "--since", "1h")
    assert "refused  write boiler/setpoint=79 bad signature" in text.stdout

    # -- counted in metrics and status; the daemon is still running
    metrics = await asyncio.to_thread(rig.daemon.ctl, "metrics")
    m = metrics.stdout
    assert metric(m, "gatewayd_commands_total", status="ok", reason="") == 4
    for reason, count in (("bad signature", 1), ("unknown key", 1), ("wrong audience", 1),
                          ("expired", 1), ("replayed", 1), ("out of scope", 1),
                          ("not writable", 1), ("out of range", 1), ("malformed token", 1),
                          ("algorithm not allowed", 2), ("tunnel not configured", 1),
                          ("rate limit exceeded", 1), ("unknown device", 0)):
        assert metric(m, "gatewayd_commands_total", status="refused", reason=reason) == count
    assert metric(m, "gatewayd_commands_total", status="failed", reason="device error") == 1
    assert metric(m, "gatewayd_uplink_commands_received_total", uplink="cloud") == 18
    assert metric(m, "gatewayd_uplink_commands_subscribed", uplink="cloud") == 1
    assert metric(m, "gatewayd_commands_trusted_keys") == 2
    st = await asyncio.to_thread(rig.daemon.status)
    assert st["commands"]["refused"] == 13 and st["commands"]["ok"] == 4
    assert st["commands"]["failed"] == 1
    assert st["components"]["device:boiler"]["health"]["writes"] == 4
    assert rig.daemon.proc is not None and rig.daemon.proc.poll() is None
    status_text = await asyncio.to_thread(rig.daemon.ctl, "status")
    assert "commands: 2 trusted key(s), 18 received (4 ok, 13 refused, 1 failed)" \
        in status_text.stdout


async def test_replay_refused_after_restart_and_keys_reload_on_sighup(
        make_rig: Any, slave: PymodbusSlave, operators: dict[str, Operator],
        broker: Mosquitto, pki: Pki) -> None:
    ops, late = operators["ops"], operators["late"]
    # a second uplink without commands = true, and a stale retained command
    quiet = (f'[uplinks.quiet]\nurl = "mqtts://127.0.0.1:{broker.tls_port}"\n'
             f'ca_file = "{pki.ca}"\nauth = {{ type = "none" }}\n')
    rig: Rig = await make_rig(quiet, start=False)
    await rig.publish("stale", ops.sign(claims(write_cmd("boiler", "setpoint", 55),
                                               scope="write:boiler/*", jti="stale-1")),
                      retain=True)
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)
    st = await rig.wait_subscribed()
    assert st["components"]["uplink:quiet"]["health"]["commands"] is None

    token = ops.sign(claims(write_cmd("boiler", "setpoint", 60), scope="write:boiler/*",
                            jti="once-only", lifetime=240))
    assert (await rig.command("first", token))["status"] == "ok"
    assert slave_writes(slave) == 1
    replay_file = rig.state / "commands" / "replay.jsonl"
    assert "once-only" in replay_file.read_text()

    rig.daemon.stop()
    mark = len(rig.daemon.notify.messages)
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready, 20.0, mark)
    await rig.wait_subscribed()
    again = await rig.command("again", token)
    assert (again["status"], again["reason"]) == ("refused", "replayed")
    assert slave_writes(slave) == 1

    # SIGHUP: a key added is trusted, a key removed is not
    write_trusted(rig.trusted, late)
    (rig.trusted / "ops.pem").unlink()
    reload = await asyncio.to_thread(rig.daemon.ctl, "reload")
    assert reload.returncode == 0
    await asyncio.to_thread(rig.daemon.wait_status,
                            lambda s: s["commands"]["trusted_keys"] == 2 and
                            {k["kid"] for k in s["commands"]["keys"]} == {"late", "ops-ed"})
    new = await rig.command("late", late.sign(claims(write_cmd("boiler", "setpoint", 61),
                                                     scope="write:boiler/setpoint")))
    assert new["status"] == "ok"
    old = await rig.command("old", ops.sign(claims(write_cmd("boiler", "setpoint", 62),
                                                   scope="write:boiler/setpoint")))
    assert (old["status"], old["reason"]) == ("refused", "unknown key")
    assert await slave.values(1, "hr", 200, 1) == [61]

    # the retained command was never acted on, on either start
    st = await asyncio.to_thread(rig.daemon.status)
    assert st["components"]["uplink:cloud"]["health"]["commands"]["ignored"] == 1
    assert not any(m.topic.endswith("/stale/result") for m in rig.results.snapshot())
    assert "stale-1" not in json.dumps(rig.audit())
