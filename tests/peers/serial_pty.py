"""A virtual serial cable: two pseudo-terminals joined by socat.

``SocatPair(directory)`` runs ``socat -d -d pty,raw,echo=0,link=DIR/dev
pty,raw,echo=0,link=DIR/emu``: the driver opens ``dev``, a device emulator opens
``emu``, and bytes written to one come out of the other. ``stop()`` (SIGTERM)
is an unplugged adapter: socat closes both ptys, the reader of ``dev`` sees end
of file and the links disappear. ``start()`` again is the adapter plugged back
in, on the same link paths (new /dev/pts numbers behind them).

Readiness is socat's own "starting data transfer loop" log line, awaited with a
deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from types import TracebackType

SOCAT = "/usr/bin/socat"
READY = b"starting data transfer loop"


class SocatPair:
    """One socat process joining ``dev`` and ``emu``; restartable on the same paths."""

    def __init__(self, directory: Path, *, start_timeout: float = 10.0) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dev = directory / "dev"
        self.emu = directory / "emu"
        self.start_timeout = start_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []

    async def start(self) -> None:
        """Start socat and return once both links exist and data flows."""
        if self.proc is not None:
            raise RuntimeError("socat is already running")
        self.proc = await asyncio.create_subprocess_exec(
            SOCAT, "-d", "-d",
            f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.emu}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:
                    line = await self.proc.stderr.readline()
                    if not line:
                        raise RuntimeError(f"socat exited: {' | '.join(self.log)}")
                    self.log.append(line.decode(errors="replace").strip())
                    if READY in line:
                        break
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Terminate socat (the unplug) and wait until it has removed its links."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(self.start_timeout):
            if proc.stderr is not None:
                rest = await proc.stderr.read()
                self.log.extend(rest.decode(errors="replace").splitlines())
            await proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def kill_now(self) -> None:
        """SIGKILL without waiting (for cleanup paths that cannot await)."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def __aenter__(self) -> SocatPair:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
