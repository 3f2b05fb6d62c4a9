"""A process that writes to a Buffer, for the kill and full-disk tests.

    python buffer_child.py write PATH BATCH BATCHES BLOCK_AFTER DURABILITY
        commits BATCHES batches of BATCH readings (value = index), printing
        "committed <last id>" after each; after BLOCK_AFTER batches (0: never)
        prints "blocked" and waits to be killed.
    python buffer_child.py fill PATH MAX_SIZE BALLAST
        writes a 512 KiB BALLAST file, commits 30 batches (more than the file
        system holds: phase "own"), then fills the rest of the file system
        with BALLAST.hog and commits 6 more ("hog"), then deletes both and
        commits 2 more ("freed"), printing the stats as JSON after each
        batch; then reopens the buffer and prints {"reopened_rows": n}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.reading import Reading

T0 = 1_700_000_000_000_000_000


def config(path: str, **kw: object) -> BufferConfig:
    values: dict[str, object] = dict(path=Path(path), max_size=64 * 1024 * 1024,
                                     commit_interval=0.05, durability="batched",
                                     max_pending=100_000)
    values.update(kw)
    return BufferConfig(**values)  # type: ignore[arg-type]


def batch(start: int, n: int, text: str = "") -> list[Reading]:
    return [Reading("dev", "p", f"{start + i}{text}" if text else float(start + i), None,
                    T0 + start + i) for i in range(n)]


async def write(path: str, size: int, batches: int, block_after: int, durability: str) -> None:
    async with Buffer(config(path, durability=durability), uplinks={"all": ["*"]}) as buf:
        for k in range(batches):
            buf.submit(batch(k * size, size))
            await buf.flush()
            print(f"committed {buf.last_id()}", flush=True)
            if k + 1 == block_after:
                print("blocked", flush=True)
                await asyncio.Event().wait()


def _write_ballast(path: Path) -> None:
    path.write_bytes(b"\0" * 512 * 1024)


def _hog(path: Path) -> None:
    """Take every byte left on the file system, as another program might."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


async def fill(path: str, max_size: int, ballast: str) -> None:
    await asyncio.to_thread(_write_ballast, Path(ballast))
    sent = 0
    hog = Path(ballast + ".hog")

    async def one(buf: Buffer, phase: str) -> None:
        nonlocal sent
        buf.submit(batch(sent, 500, text=":" + "x" * 200))
        sent += 500
        await buf.flush()
        stats = await buf.stats()
        stats["sent"] = sent
        stats["phase"] = phase
        print(json.dumps(stats), flush=True)

    async with Buffer(config(path, max_size=max_size), uplinks={"all": ["*"]}) as buf:
        for _ in range(30):  # about 3 MiB of readings: more than the file system holds
            await one(buf, "own")
        await asyncio.to_thread(_hog, hog)  # another program takes the rest
        await asyncio.sleep(1.1)  # the next free-space check is due
        for _ in range(6):
            await one(buf, "hog")
        await asyncio.to_thread(hog.unlink)  # space comes back
        await asyncio.to_thread(Path(ballast).unlink)
        await asyncio.sleep(1.1)
        for _ in range(2):
            await one(buf, "freed")
    async with Buffer(config(path, max_size=max_size), uplinks={"all": ["*"]}) as buf:
        print(json.dumps({"reopened_rows": (await buf.stats())["rows"]}), flush=True)


def main() -> None:
    mode, path, *args = sys.argv[1:]
    if mode == "write":
        asyncio.run(write(path, int(args[0]), int(args[1]), int(args[2]), args[3]))
    elif mode == "fill":
        asyncio.run(fill(path, int(args[0]), args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
