"""``gatewayd-wsproxy``: carries one SSH connection over a WebSocket relay.

ssh runs it as its ``ProxyCommand``: what ssh writes to our standard input goes
to the relay in binary WebSocket messages, and what the relay sends goes to our
standard output. The relay (websockify, or any server that pipes a WebSocket
to the bastion's sshd) sees only SSH's encrypted bytes.

Usage: ``python3 -m gatewayd.tunnel.wsproxy [--ca-file PEM] [--connect-timeout S] URL``

With ``wss://`` the relay's certificate is always verified (against
``--ca-file`` when given, else the system CA store) and its name must match
the URL's host. An HTTP(S) proxy named in ``https_proxy``/``all_proxy`` is used
(``no_proxy`` honoured). Failures print one line starting ``gatewayd-wsproxy:``
on standard error, which ssh passes on to gatewayd.

Exit codes: 0 the connection ended normally; 1 the relay could not be reached
or dropped the connection; 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidURI, WebSocketException

from gatewayd import __version__

PROG: Final = "gatewayd-wsproxy"
CHUNK: Final = 64 * 1024
MAX_MESSAGE: Final = 1024 * 1024  # larger messages from the relay close the connection


class RelayError(Exception):
    """The relay could not be reached or broke the connection."""


class _Output(asyncio.Protocol):
    """Standard output as a write pipe with flow control."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()
        if self.lost:
            raise BrokenPipeError("standard output closed")


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verified; only ``ca_file`` trusted when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _open(url: str, ca_file: str | None, limit: float) -> ClientConnection:
    tls = tls_context(ca_file) if url.startswith("wss:") else None
    try:
        async with asyncio.timeout(limit):
            return await connect(url, ssl=tls, compression=None, open_timeout=None,
                                 close_timeout=2.0, max_size=MAX_MESSAGE,
                                 user_agent_header=f"{PROG}/{__version__}")
    except TimeoutError:
        raise RelayError(f"cannot connect to {url}: no answer within {limit:g}s") from None
    except ssl.SSLCertVerificationError as err:
        raise RelayError(f"cannot connect to {url}: TLS certificate not accepted "
                         f"({err.verify_message})") from None
    except (OSError, WebSocketException) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise RelayError(f"cannot connect to {url}: {reason or type(err).__name__}") from None


async def _upstream(reader: asyncio.StreamReader, ws: ClientConnection) -> None:
    """ssh -> relay, until ssh closes our standard input."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                await ws.close()
                return
            await ws.send(data)
    except ConnectionClosedOK:
        pass
    except WebSocketException as err:
        raise RelayError(f"relay connection lost: {err}") from None


async def _downstream(ws: ClientConnection, transport: asyncio.WriteTransport,
                      output: _Output) -> None:
    """relay -> ssh, until the relay closes the connection."""
    try:
        async for message in ws:
            if isinstance(message, str):
                raise RelayError("the relay sent a text message; expected binary SSH data")
            transport.write(message)
            await output.drain()
    except ConnectionClosedOK:
        pass
    except WebSocketException as err:
        raise RelayError(f"relay connection lost: {err}") from None
    transport.close()


async def relay(url: str, *, ca_file: str | None, connect_timeout: float) -> None:
    """Pipe standard input/output through the relay at ``url``. Raises RelayError."""
    loop = asyncio.get_running_loop()
    ws = await _open(url, ca_file, connect_timeout)
    reader = asyncio.StreamReader(limit=CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, output = await loop.connect_write_pipe(_Output, sys.stdout)
    try:
        async with asyncio.TaskGroup() as tg:
            up = tg.create_task(_upstream(reader, ws))
            down = tg.create_task(_downstream(ws, transport, output))
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            if down.done():
                up.cancel()  # the relay is gone: nothing more can be sent
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        relay_errors = [e for e in leaves if isinstance(e, RelayError)]
        if relay_errors:
            raise relay_errors[0] from None
        if not all(isinstance(e, (BrokenPipeError, ConnectionResetError)) for e in leaves):
            raise
        # ssh went away first: nothing to report
    finally:
        transport.close()
        await ws.close()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Carry an SSH connection over a "
                                "WebSocket relay (an ssh ProxyCommand).")
    p.add_argument("url", help="the relay, wss://host[:port]/path (or ws://)")
    p.add_argument("--ca-file", default=None,
                   help="PEM file of the CA(s) that may sign the relay's certificate "
                        "(default: the system CA store)")
    p.add_argument("--connect-timeout", type=float, default=15.0,
                   help="seconds to reach the relay and upgrade to WebSocket (default 15)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.url.startswith(("wss://", "ws://")):
        print(f"{PROG}: invalid URL {args.url!r}; expected wss:// or ws://", file=sys.stderr)
        return 2
    try:
        asyncio.run(relay(args.url, ca_file=args.ca_file, connect_timeout=args.connect_timeout))
    except RelayError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except (InvalidURI, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
