"""The websocket transport: ssh's ProxyCommand (gatewayd.tunnel.wsproxy) carries the
tunnel through a wss:// relay in front of the real sshd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.tunnel.runner import ReverseTunnel
from tests.peers.pki import Pki, make_pki
from tests.tunnel.conftest import Bastion
from tests.tunnel.test_tunnel_sshd import running, until
from tests.tunnel.tunnel_support import (
    WEBSOCKIFY,
    EchoServer,
    Websockify,
    WsRelay,
    aecho_through,
    tunnel_config,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def ws_tunnel(bastion: Bastion, echo: EchoServer, tmp_path: Path, url: str,
              ca_file: Path) -> ReverseTunnel:
    table = bastion.tunnel_table(echo.port, transport="websocket", url=url,
                                 ca_file=str(ca_file))
    # host and port are not used to connect: only the relay URL is.
    table["host"] = "bastion.invalid"
    table["port"] = 1
    return ReverseTunnel(tunnel_config(table), runtime_dir=tmp_path / "run")


async def test_wss_relay_carries_the_tunnel(bastion: Bastion, echo: EchoServer, pki: Pki,
                                            tmp_path: Path) -> None:
    async with WsRelay(pki, bastion.sshd.port) as relay:
        tunnel = ws_tunnel(bastion, echo, tmp_path, relay.url, pki.ca)
        async with running(tunnel):
            h = await until(tunnel, lambda h: h["up"])
            assert h["transport"] == "websocket"
            assert h["bastion"] == f"{bastion.sshd.user}@{relay.url}"
            payload = os.urandom(200_000)
            assert await aecho_through(bastion.remote_port, payload) == payload
            await until(tunnel, lambda h: h["connections"] == 1)
        assert relay.connections == 1
        assert relay.bytes_up > len(payload)  # the echoed data went up through the relay


async def test_websockify_carries_the_tunnel(bastion: Bastion, echo: EchoServer, pki: Pki,
                                             tmp_path: Path) -> None:
    if not os.access(WEBSOCKIFY, os.X_OK):
        pytest.skip("websockify is not installed")
    with Websockify(pki, bastion.sshd.port) as relay:
        tunnel = ws_tunnel(bastion, echo, tmp_path, relay.url, pki.ca)
        async with running(tunnel):
            await until(tunnel, lambda h: h["up"])
            assert await aecho_through(bastion.remote_port, b"via websockify") == \
                b"via websockify"


async def test_relay_certificate_from_another_ca_is_refused(
        bastion: Bastion, echo: EchoServer, pki: Pki, tmp_path: Path) -> None:
    async with WsRelay(pki, bastion.sshd.port) as relay:
        tunnel = ws_tunnel(bastion, echo, tmp_path, relay.url, pki.other_ca)
        async with running(tunnel):
            h = await until(tunnel, lambda h: h["failures"] >= 1)
        assert h["last_error_reason"] == "proxy_failed"
        assert "TLS certificate not accepted" in h["last_error"]
        assert h["ups"] == 0
        assert relay.connections == 0


def test_wsproxy_usage_and_unreachable_relay(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gatewayd.tunnel.wsproxy", *args],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.PIPE, check=False)

    bad = run("https://relay.example.net/")
    assert bad.returncode == 2
    assert "expected wss:// or ws://" in bad.stderr
    from tests.peers.mosquitto import free_port

    port = free_port()
    down = run("--connect-timeout", "5", f"wss://127.0.0.1:{port}/ssh")
    assert down.returncode == 1
    assert down.stderr.startswith(f"gatewayd-wsproxy: cannot connect to wss://127.0.0.1:{port}/ssh")


async def test_wsproxy_pipes_both_ways(pki: Pki) -> None:
    """stdin -> relay -> echo -> relay -> stdout, then EOF ends it with status 0."""
    with EchoServer() as echo:
        async with WsRelay(pki, echo.port) as relay:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gatewayd.tunnel.wsproxy", "--ca-file", str(pki.ca),
                relay.url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            assert proc.stdin is not None and proc.stdout is not None
            payload = os.urandom(300_000)
            proc.stdin.write(payload)
            await proc.stdin.drain()
            async with asyncio.timeout(30):
                got = await proc.stdout.readexactly(len(payload))
            assert got == payload
            proc.stdin.close()
            async with asyncio.timeout(30):
                _, err = await proc.communicate()
            assert proc.returncode == 0, err
            assert err == b""
