"""The control socket: one JSON request line in, one JSON response line out.

The daemon serves it on a Unix socket in the runtime directory (mode 0660);
``gatewayctl`` is its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gatewayd.errors import ControlError, GatewayError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class DaemonNotRunning(ControlError):
    """No daemon answers on the control socket."""


class ControlServer:
    """Serves ``handler`` on a Unix socket; a supervised component."""

    name = "control"

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.requests = 0
        self.errors = 0
        self.listening = asyncio.Event()  # set once the socket accepts connections

    def health(self) -> dict[str, Any]:
        return {"socket": str(self.path), "requests": self.requests, "errors": self.errors}

    async def run(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                 limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)
        log.info("control socket listening on %s", self.path)
        self.listening.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _remove_stale(self) -> None:
        if not self.path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: a leftover of a crash
            return
        finally:
            probe.close()
        raise ControlError(f"another daemon is already listening on {self.path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readline()
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("expected a JSON object")
                    response = await self.handler(request)
                except (ValueError, GatewayError) as err:
                    self.errors += 1
                    response = {"ok": False, "error": str(err)}
                writer.write(json.dumps(response, default=str).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as err:
            self.errors += 1
            log.debug("control request dropped: %s", err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def request(path: Path, cmd: str, timeout: float = REQUEST_TIMEOUT,
            **args: Any) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (blocking; for the CLI).

    Raises DaemonNotRunning when nothing listens, ControlError on other failures.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonNotRunning(f"gatewayd is not running (no answer on {path})") from err
        except PermissionError as err:
            raise ControlError(f"permission denied on {path}; "
                               "run as root or as a member of the gatewayd group") from err
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError as err:
        raise ControlError(f"gatewayd did not answer on {path} within {timeout:g}s") from err
    except OSError as err:
        raise ControlError(f"control socket {path}: {err.strerror or err}") from err
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError as err:
        raise ControlError(f"invalid answer from gatewayd on {path}") from err
    if not isinstance(answer, dict):
        raise ControlError(f"invalid answer from gatewayd on {path}")
    if answer.get("ok") is False:
        raise ControlError(str(answer.get("error", "request failed")))
    return answer
