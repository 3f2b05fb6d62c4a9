"""A pair of connected pseudo-terminals made by socat: a serial line on loopback.

``async with pty_pair(folder) as (master_end, slave_end):`` gives two paths;
bytes written to one come out of the other, with no baud-rate timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path


@contextlib.asynccontextmanager
async def pty_pair(folder: Path, name: str = "bus") -> AsyncIterator[tuple[str, str]]:
    """Start socat; yields the two link paths once socat's data loop runs."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed (Debian package socat)")
    a, b = folder / f"{name}-a", folder / f"{name}-b"
    proc = await asyncio.create_subprocess_exec(
        socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(10):
            while True:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError("socat exited before the pty pair was ready")
                if b"starting data transfer loop" in line:
                    break
        yield str(a), str(b)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
