"""A Modbus slave that is not pymodbus: tests/peers/modbus_slave.c built against
Debian's libmodbus (package libmodbus-dev) with gcc, run as a subprocess.

Every request it receives is appended to a log file, one line per request
(``UNIT FC ADDRESS COUNT``), so tests count requests on the slave side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("modbus_slave.c")


class SlaveUnavailable(RuntimeError):
    """gcc or libmodbus-dev is missing."""


def build_slave(folder: Path) -> Path:
    """Compile the slave into ``folder``; raises SlaveUnavailable without gcc/libmodbus."""
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/modbus/modbus.h").exists():
        raise SlaveUnavailable("needs gcc and libmodbus-dev (apt-get install libmodbus-dev)")
    binary = folder / "modbus_slave"
    subprocess.run(
        [gcc, "-O1", "-Wall", "-o", str(binary), str(SOURCE), "-I/usr/include/modbus",
         "-lmodbus"],
        check=True, capture_output=True, timeout=60)
    return binary


def map_args(maps: Mapping[str, Mapping[int, Sequence[int]]]) -> list[str]:
    """``{"hr": {100: [1, 2]}}`` -> ``["hr:100=1,2"]``."""
    return [f"{space}:{address}=" + ",".join(str(v) for v in values)
            for space, blocks in maps.items() for address, values in blocks.items()]


@dataclass
class RunningSlave:
    port: int
    log: Path

    def requests(self) -> list[tuple[int, int, int, int]]:
        """Every request received so far: (unit, function, address, count)."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            unit, fc, address, count = (int(x) for x in line.split())
            out.append((unit, fc, address, count))
        return out


@contextlib.asynccontextmanager
async def libmodbus_slave(binary: Path, log: Path, transport: Sequence[str], unit: int,
                          maps: Mapping[str, Mapping[int, Sequence[int]]]
                          ) -> AsyncIterator[RunningSlave]:
    """Run the slave: ``transport`` is ``["tcp", "0"]`` or
    ``["rtu", DEVICE, BAUD, PARITY]``. Yields once it listens."""
    proc = await asyncio.create_subprocess_exec(
        str(binary), str(log), *transport, str(unit), *map_args(maps),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=None, env={**os.environ})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = await proc.stdout.readline()
            while line and not line.startswith(b"ready "):  # debug output precedes it
                line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("libmodbus slave failed to start")
        yield RunningSlave(port=int(line.split()[1]), log=log)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
