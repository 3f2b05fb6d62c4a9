"""A loopback TCP proxy the test controls: refuse new connections, or cut live ones
abruptly (the broker then sees a client die without DISCONNECT)."""

from __future__ import annotations

import asyncio
from types import TracebackType

from tests.peers.mosquitto import free_port


class TcpProxy:
    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.resume()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.pause()
        self.cut()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def resume(self) -> None:
        """Accept connections (again) on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                      reuse_address=True)

    async def pause(self) -> None:
        """Stop listening: new connections are refused; live ones carry on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        """Abort every live connection on both sides (RST, no goodbye)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, up_writer))
                tg.create_task(self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
