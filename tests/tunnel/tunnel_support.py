"""Peers and helpers of the tunnel tests: a TCP echo service on the gateway side,
a client that goes through the bastion's forwarded port, WebSocket relays in
front of sshd (our own with ``websockets``, and Debian's websockify), and the
``[tunnel]`` table parsed from a dict."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.errors import ConfigError
from gatewayd.tunnel.config import TunnelConfig, parse_tunnel
from tests.peers.mosquitto import free_port
from tests.peers.pki import Pki

WEBSOCKIFY = "/usr/bin/websockify"


def tunnel_config(table: dict[str, Any], *,
                  default_key_file: Path = Path("/nonexistent/ssh_ed25519")) -> TunnelConfig:
    """``table`` parsed as ``[tunnel]``; raises ConfigError with every problem."""
    problems = Problems(Origins("test.toml"))
    root = Section({"tunnel": table}, "", problems)
    config = parse_tunnel(root, default_key_file=default_key_file)
    root.done()
    if problems.items:
        raise ConfigError(problems.items)
    assert config is not None
    return config


def config_problems(table: dict[str, Any]) -> list[str]:
    """The problems ``table`` has as ``[tunnel]`` (empty when valid)."""
    try:
        tunnel_config(table)
    except ConfigError as err:
        return [str(p) for p in err.problems]
    return []


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.connections += 1
        while data := self.request.recv(65536):
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """A TCP echo service on 127.0.0.1 (a free port), in threads of its own: it
    answers while the test blocks or awaits."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.port: int = self.server_address[1]
        self.connections = 0
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def echo_through(port: int, payload: bytes, timeout: float = 15.0) -> bytes:
    """Connect to 127.0.0.1:``port`` (the bastion's forwarded port), send
    ``payload`` and return what comes back (as many bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


async def aecho_through(port: int, payload: bytes) -> bytes:
    """:func:`echo_through` from a coroutine."""
    return await asyncio.to_thread(echo_through, port, payload)


def refused(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


class WsRelay:
    """A ``wss://`` relay made with ``websockets``: each WebSocket connection is
    piped to a new TCP connection to ``target_port`` (the bastion's sshd)."""

    def __init__(self, pki: Pki, target_port: int) -> None:
        self.pki = pki
        self.target_port = target_port
        self.connections = 0
        self.bytes_up = 0
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"wss://localhost:{self.port}/ssh"

    async def __aenter__(self) -> WsRelay:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.server.cert, self.pki.server.key)
        self._server = await serve(self._handle, "127.0.0.1", 0, ssl=ctx, compression=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def up() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    data = message.encode() if isinstance(message, str) else message
                    self.bytes_up += len(data)
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def down() -> None:
            with contextlib.suppress(ConnectionClosed):
                while data := await reader.read(65536):
                    await ws.send(data)
            await ws.close()

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(up()), tg.create_task(down())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
        finally:
            writer.close()


class Websockify:
    """Debian's websockify with TLS only, in front of ``target_port``."""

    def __init__(self, pki: Pki, target_port: int) -> None:
        self.port = free_port()
        self.argv = [WEBSOCKIFY, "--ssl-only", "--cert", str(pki.server.cert),
                     "--key", str(pki.server.key), f"127.0.0.1:{self.port}",
                     f"127.0.0.1:{target_port}"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"wss://localhost:{self.port}/"

    def __enter__(self) -> Websockify:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        seen = []
        for raw in self.proc.stdout:  # ends when websockify exits
            seen.append(raw.decode(errors="replace"))
            if "proxying from" in seen[-1]:
                break
        else:
            raise RuntimeError("websockify did not start:\n" + "".join(seen))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
