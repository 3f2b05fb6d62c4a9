"""An optional HTTP listener serving the Prometheus metrics (GET /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gatewayd.config.units import parse_host_port

log = logging.getLogger(__name__)


class MetricsHttpServer:
    """Serves ``render()`` at /metrics on the configured address (loopback by default)."""

    name = "metrics-http"

    def __init__(self, listen: str, render: Callable[[], Awaitable[str]]) -> None:
        self.host, self.port = parse_host_port(listen)  # validated at config load
        self.render = render
        self.requests = 0

    def health(self) -> dict[str, Any]:
        return {"listen": f"{self.host}:{self.port}", "requests": self.requests}

    async def run(self) -> None:
        server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("metrics listening on http://%s:%d/metrics", self.host, self.port)
        async with server:
            await server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            async with asyncio.timeout(5.0):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                parts = request.split()
                if len(parts) >= 2 and parts[0] == b"GET" and parts[1] == b"/metrics":
                    body = (await self.render()).encode()
                    head = (b"HTTP/1.0 200 OK\r\n"
                            b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n")
                else:
                    body, head = b"not found\n", b"HTTP/1.0 404 Not Found\r\n"
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
