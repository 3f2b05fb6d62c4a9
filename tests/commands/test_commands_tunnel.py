"""``tunnel.open`` and ``tunnel.close`` as signed commands through the running daemon,
against Debian's sshd as the bastion, with the SSH key ``gatewayctl identity init``
made. The tunnel's own fixtures (tests/tunnel) provide the bastion and the echo
service behind the forward."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.commands.command_support import Operator, claims
from tests.commands.conftest import WAIT, Rig
from tests.tunnel.conftest import Bastion, bastion, echo, gateway_key  # noqa: F401 - fixtures
from tests.tunnel.tunnel_support import EchoServer, echo_through, refused

pytestmark = pytest.mark.timeout(180)


def tunnel_table(bast: Bastion, server: EchoServer) -> str:
    sshd = bast.sshd
    return (f'\n[tunnel]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
            f'host_key = "[127.0.0.1]:{sshd.port} {sshd.host_key}"\n'
            f'forwards = [{{ remote = "{bast.forward_remote}", local = "127.0.0.1:{server.port}"'
            ' }]\nmode = "on-demand"\nmax_ttl = "2h"\nbackoff_initial = "100ms"\n'
            'backoff_max = "1s"\n')


def tunnel(st: dict[str, Any]) -> dict[str, Any]:
    health: dict[str, Any] = st["components"]["tunnel"]["health"]
    return health


async def test_signed_commands_open_and_close_the_tunnel(
        make_rig: Any, operators: dict[str, Operator], bastion: Bastion,  # noqa: F811
        echo: EchoServer) -> None:  # noqa: F811
    rig: Rig = await make_rig(tunnel_table(bastion, echo), start=False)
    public = (rig.state / "identity" / "ssh_ed25519.pub").read_text().strip()
    bastion.sshd.authorize(public, listen=[bastion.forward_remote])
    rig.daemon.start()
    await asyncio.to_thread(rig.daemon.wait_ready)
    await rig.wait_subscribed()
    ed = operators["ops-ed"]

    opened = await rig.command("open", ed.sign(claims({"action": "tunnel.open", "ttl": 600},
                                                      scope="tunnel:open")))
    assert (opened["status"], opened["ttl"]) == ("ok", 600)
    st = await asyncio.to_thread(rig.daemon.wait_status, lambda s: tunnel(s)["up"], WAIT)
    assert 0 < tunnel(st)["open_remaining_s"] <= 600
    echoed = await asyncio.to_thread(echo_through, bastion.remote_port, b"via a command")
    assert echoed == b"via a command"

    too_long = await rig.command("long", ed.sign(claims(
        {"action": "tunnel.open", "ttl": 3 * 3600}, scope="tunnel:*")))
    assert (too_long["status"], too_long["reason"]) == ("refused", "tunnel refused")
    assert "max_ttl" in too_long["detail"]
    no_scope = await rig.command("noscope", ed.sign(claims({"action": "tunnel.close"},
                                                           scope="tunnel:open")))
    assert (no_scope["status"], no_scope["reason"]) == ("refused", "out of scope")
    assert tunnel(await asyncio.to_thread(rig.daemon.status))["up"]

    closed = await rig.command("close", ed.sign(claims({"action": "tunnel.close"},
                                                       scope="tunnel:*")))
    assert closed["status"] == "ok"
    await asyncio.to_thread(rig.daemon.wait_status,
                            lambda s: tunnel(s)["state"] == "closed", WAIT)
    await asyncio.to_thread(bastion.sshd.wait_no_sessions)
    assert await asyncio.to_thread(refused, bastion.remote_port)
    actions = [(rec["action"], rec["status"]) for rec in rig.audit()]
    assert actions == [("tunnel.open", "accepted"), ("tunnel.open", "ok"),
                       ("tunnel.open", "accepted"), ("tunnel.open", "refused"),
                       ("tunnel.close", "refused"), ("tunnel.close", "accepted"),
                       ("tunnel.close", "ok")]
