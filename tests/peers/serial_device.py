"""Serial device emulators for the far end of a :class:`~tests.peers.serial_pty.SocatPair`.

- :class:`EmulatedPort`: the device's end of the cable (a raw, non-blocking
  pty), read and written through the event loop.
- :func:`replay`: send a capture (NMEA, instrument output, frames) as is.
- :class:`Instrument`: a polled instrument that answers each query with the
  next reply (or stays silent when the reply is None).

Also a command line, for trying the driver by hand on the virtual bench::

    python -m tests.peers.serial_device replay DIR/emu capture.nmea --rate 10 --loop
    python -m tests.peers.serial_device instrument DIR/emu --query 'R\\r\\n' \\
        --reply 'ST,GS,+{n:07.2f}kg\\r\\n'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


class EmulatedPort:
    """A pty opened raw and non-blocking; ``read`` raises EOFError on hang-up."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> EmulatedPort:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def _wait(self, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        (loop.add_writer if writing else loop.add_reader)(self.fd, wake)
        try:
            await ready
        finally:
            (loop.remove_writer if writing else loop.remove_reader)(self.fd)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await self._wait(writing=True)

    async def read(self) -> bytes:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                await self._wait(writing=False)
                continue
            except OSError as err:
                raise EOFError(str(err)) from err
            if not data:
                raise EOFError("hang-up")
            return data


async def replay(port: EmulatedPort, data: bytes, *, rate: float = 0.0) -> None:
    """Write ``data``: at once, or line by line at ``rate`` lines per second."""
    if rate <= 0:
        await port.write(data)
        return
    for line in data.splitlines(keepends=True):
        await port.write(line)
        await asyncio.sleep(1.0 / rate)  # the device's own pace, not a wait for anything


Reply = Callable[[int], "bytes | None"]


class Instrument:
    """Answers every ``query`` it receives with ``reply(n)`` (n counts from 0);
    a None reply means the instrument stays silent that time."""

    def __init__(self, port: EmulatedPort, *, query: bytes, reply: Reply) -> None:
        self.port = port
        self.query = query
        self.reply = reply
        self.received = bytearray()
        self.queries = 0
        self._seen = asyncio.Event()

    async def run(self) -> None:
        """Serve queries until the line hangs up (or the task is cancelled)."""
        pending = bytearray()
        try:
            while True:
                data = await self.port.read()
                self.received += data
                pending += data
                while (i := pending.find(self.query)) >= 0:
                    del pending[: i + len(self.query)]
                    answer = self.reply(self.queries)
                    self.queries += 1
                    self._seen.set()
                    if answer is not None:
                        await self.port.write(answer)
        except EOFError:
            return

    async def wait_queries(self, n: int) -> None:
        """Return once ``n`` queries have been received."""
        while self.queries < n:
            self._seen.clear()
            await self._seen.wait()


def _unescape(text: str) -> bytes:
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


async def _main(args: argparse.Namespace, data: bytes) -> None:
    with EmulatedPort(args.port) as port:
        if args.command == "replay":
            while True:
                await replay(port, data, rate=args.rate)
                if not args.loop:
                    return
        else:
            template = _unescape(args.reply).decode("latin-1")
            inst = Instrument(port, query=_unescape(args.query),
                              reply=lambda n: template.format(n=float(n)).encode("latin-1"))
            await inst.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="send a capture file")
    rp.add_argument("port")
    rp.add_argument("file")
    rp.add_argument("--rate", type=float, default=0.0, help="lines per second (0: at once)")
    rp.add_argument("--loop", action="store_true")
    ip = sub.add_parser("instrument", help="answer queries")
    ip.add_argument("port")
    ip.add_argument("--query", default="R\\r\\n")
    ip.add_argument("--reply", default="ST,GS,+{n:07.2f}kg\\r\\n")
    args = parser.parse_args()
    data = Path(args.file).read_bytes() if args.command == "replay" else b""
    asyncio.run(_main(args, data))


if __name__ == "__main__":
    main()
