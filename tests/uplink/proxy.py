"""A loopback TCP proxy the test controls: refuse new connections, cut live ones
abruptly (the broker then sees a client die without DISCONNECT), or stall: accept
connections and hold every byte, like a broker that hangs."""

from __future__ import annotations

import asyncio
import threading
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
        self._flowing = asyncio.Event()
        self._flowing.set()

    def stall(self) -> None:
        """Keep accepting connections but forward nothing, either way, until ``unstall``."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

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

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


class ThreadedProxy:
    """A TcpProxy on its own event loop in a thread, for tests written as plain functions."""

    def __init__(self, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = self._call(self._make(target_port))
        self.port = self.proxy.port

    @staticmethod
    async def _make(target_port: int) -> TcpProxy:
        return TcpProxy(target_port)

    def _call(self, coro: object) -> TcpProxy:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def __enter__(self) -> ThreadedProxy:
        self._call(self.proxy.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.unstall()
        self._call(self.proxy.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.stall)

    def unstall(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.unstall)
