"""The tunnel against Debian's real sshd as the bastion (in-process ReverseTunnel)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd.tunnel.command import HOST_KEY_ALIAS
from gatewayd.tunnel.errors import TunnelRequestRefused
from gatewayd.tunnel.runner import ReverseTunnel
from tests.peers.sshd import alive, make_key, wait_gone
from tests.tunnel.conftest import Bastion
from tests.tunnel.tunnel_support import EchoServer, aecho_through, refused, tunnel_config

WAIT = 30.0  # generous: the machine may be loaded


@contextlib.asynccontextmanager
async def running(tunnel: ReverseTunnel) -> AsyncIterator[ReverseTunnel]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(tunnel.run())
        try:
            yield tunnel
        finally:
            task.cancel()


async def until(tunnel: ReverseTunnel, predicate: Callable[[dict[str, Any]], bool],
                limit: float = WAIT) -> dict[str, Any]:
    try:
        async with asyncio.timeout(limit):
            return await tunnel.watch(predicate)
    except TimeoutError:
        raise AssertionError(f"tunnel condition not met in {limit}s: {tunnel.health()}") from None


def make(bastion: Bastion, echo_port: int, tmp_path: Path, **extra: object) -> ReverseTunnel:
    return ReverseTunnel(tunnel_config(bastion.tunnel_table(echo_port, **extra)),
                         runtime_dir=tmp_path / "run")


async def test_tunnel_up_reaches_the_local_echo_service(bastion: Bastion, echo: EchoServer,
                                                        tmp_path: Path) -> None:
    tunnel = make(bastion, echo.port, tmp_path)
    async with running(tunnel):
        h = await until(tunnel, lambda h: h["up"])
        assert h["state"] == "up" and h["ups"] == 1 and h["starts"] == 1
        assert h["failures"] == 0 and h["last_error"] is None
        assert h["forwards"] == [f"127.0.0.1:{bastion.remote_port} -> 127.0.0.1:{echo.port}"]
        assert alive(h["pid"])
        for i in range(3):
            payload = f"hello {i} ".encode() * 1000
            assert await aecho_through(bastion.remote_port, payload) == payload
        h = await until(tunnel, lambda h: h["connections"] == 3)
        assert echo.connections == 3
        # The pinned file holds the configured key only, readable by the daemon alone.
        pinned = tunnel.known_hosts
        assert pinned.read_text() == f"{HOST_KEY_ALIAS} {bastion.sshd.host_key}\n"
        assert stat.S_IMODE(pinned.stat().st_mode) == 0o600
    assert tunnel.health()["state"] == "stopped"
    assert wait_gone(h["pid"], 10)
    await asyncio.to_thread(bastion.sshd.wait_no_sessions)
    assert refused(bastion.remote_port)


async def test_wrong_pinned_host_key_is_refused_and_reported(
        bastion: Bastion, echo: EchoServer, tmp_path: Path) -> None:
    impostor = " ".join(make_key(tmp_path / "impostor").split()[:2])
    tunnel = make(bastion, echo.port, tmp_path, host_key=impostor)
    mark = len(bastion.sshd.log)
    async with running(tunnel):
        h = await until(tunnel, lambda h: h["failures"] >= 2)
    assert h["last_error_reason"] == "host_key_mismatch"
    assert h["last_error"].startswith(
        "the bastion's host key does not match the pinned host_key (")
    assert "requested strict checking" in h["last_error"]
    assert h["ups"] == 0 and h["connections"] == 0
    assert h["last_error_at"] is not None
    # ssh gave up before offering the gateway key.
    assert not any("Accepted publickey" in line for line in bastion.sshd.log[mark:])
    assert refused(bastion.remote_port)


async def test_sshd_killed_then_back_the_tunnel_comes_back(
        bastion: Bastion, echo: EchoServer, tmp_path: Path) -> None:
    tunnel = make(bastion, echo.port, tmp_path)
    async with running(tunnel):
        h = await until(tunnel, lambda h: h["up"])
        first_pid = h["pid"]
        assert await aecho_through(bastion.remote_port, b"before") == b"before"

        await asyncio.to_thread(bastion.sshd.kill)
        h = await until(tunnel, lambda h: h["failures"] >= 2 and not h["up"])
        assert h["last_error_reason"] in ("connection_lost", "connect_refused")
        assert h["ups"] == 1
        assert not alive(first_pid) or await asyncio.to_thread(wait_gone, first_pid, 10)

        await asyncio.to_thread(bastion.sshd.start)
        h = await until(tunnel, lambda h: h["up"] and h["ups"] == 2)
        assert h["starts"] >= 3 and h["pid"] != first_pid
        assert await aecho_through(bastion.remote_port, b"after") == b"after"


async def test_on_demand_opens_and_closes_by_ttl_and_by_request(
        bastion: Bastion, echo: EchoServer, tmp_path: Path) -> None:
    tunnel = make(bastion, echo.port, tmp_path, mode="on-demand", max_ttl="1h")
    async with running(tunnel):
        h = await until(tunnel, lambda h: h["state"] == "closed")
        assert h["starts"] == 0 and h["pid"] is None and h["open_until"] is None
        assert refused(bastion.remote_port)

        # A window set with a TTL ends by itself.
        await tunnel.open(2.0)
        h = await until(tunnel, lambda h: h["state"] == "closed" and h["last_close"] == "ttl")
        assert h["starts"] >= 1 and h["pid"] is None and h["open_remaining_s"] is None

        # Open, use, then shorten the window: the TTL closes the running tunnel.
        await tunnel.open(600)
        h = await until(tunnel, lambda h: h["up"])
        assert 0 < h["open_remaining_s"] <= 600
        pid = h["pid"]
        assert await aecho_through(bastion.remote_port, b"on demand") == b"on demand"
        await tunnel.open(1.0)
        h = await until(tunnel, lambda h: h["state"] == "closed")
        assert h["last_close"] == "ttl"
        assert await asyncio.to_thread(wait_gone, pid, 10)
        await asyncio.to_thread(bastion.sshd.wait_no_sessions)
        assert refused(bastion.remote_port)

        # Closed on request: close() returns once ssh has ended.
        await tunnel.open(600)
        h = await until(tunnel, lambda h: h["up"])
        pid = h["pid"]
        await tunnel.close()
        h = tunnel.health()
        assert h["state"] == "closed" and h["last_close"] == "request"
        assert await asyncio.to_thread(wait_gone, pid, 10)
        await asyncio.to_thread(bastion.sshd.wait_no_sessions)
        assert refused(bastion.remote_port)
        await tunnel.close()  # closing a closed tunnel does nothing

        for bad in (0, -1, 3601, float("inf"), float("nan")):
            with pytest.raises(TunnelRequestRefused, match="ttl"):
                await tunnel.open(bad)
        assert tunnel.health()["state"] == "closed"


async def test_always_mode_cannot_be_closed(bastion: Bastion, echo: EchoServer,
                                            tmp_path: Path) -> None:
    tunnel = make(bastion, echo.port, tmp_path)
    async with running(tunnel):
        await until(tunnel, lambda h: h["up"])
        await tunnel.open(60)  # open anyway: nothing changes
        with pytest.raises(TunnelRequestRefused, match="always on"):
            await tunnel.close()
        h = tunnel.health()
        assert h["up"] and h["open_until"] is None and h["starts"] == 1


@pytest.mark.parametrize("case", ["not_authorized", "forward_not_permitted",
                                  "key_missing", "key_unprotected"])
async def test_failures_are_named(case: str, bastion: Bastion, echo: EchoServer,
                                  tmp_path: Path) -> None:
    extra: dict[str, object] = {}
    if case == "not_authorized":
        extra["key_file"] = str(tmp_path / "stranger")
        make_key(tmp_path / "stranger")
    elif case == "forward_not_permitted":
        extra["forwards"] = [{"remote": "127.0.0.1:1", "local": f"127.0.0.1:{echo.port}"}]
    elif case == "key_missing":
        extra["key_file"] = str(tmp_path / "absent")
    else:
        os.chmod(bastion.key_file, 0o644)
    tunnel = make(bastion, echo.port, tmp_path, **extra)
    async with running(tunnel):
        h = await until(tunnel, lambda h: h["failures"] >= 2)
    expected = {
        "not_authorized": ("auth_failed", "Permission denied (publickey)"),
        "forward_not_permitted": ("forward_failed", "remote port forwarding failed"),
        "key_missing": ("key_missing", "'gatewayctl identity init' makes it"),
        "key_unprotected": ("key_unprotected", "has mode 0644; expected 0600"),
    }[case]
    assert h["last_error_reason"] == expected[0]
    assert expected[1] in h["last_error"]
    assert h["ups"] == 0
    if case.startswith("key_"):
        assert h["starts"] == 0  # found before ssh was started
