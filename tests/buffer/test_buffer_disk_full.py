"""SQLITE_FULL: counted, alarmed, evicted or dropped, and the buffer keeps running."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig
from gatewayd.errors import StorageError
from tests.buffer.buffer_support import read_all, readings, running

CHILD = Path(__file__).with_name("buffer_child.py")


async def _cap_pages(buf: Buffer, pages: int) -> None:
    """Make the disk 'full' at ``pages`` pages, below the buffer's own budget."""
    db = buf._db  # the test reaches in: no public way to shrink the disk under the buffer
    assert db is not None
    async with db.lock:
        await db.execute_pragma(f"PRAGMA max_page_count = {pages}")


async def _page_count(buf: Buffer) -> int:
    db = buf._db
    assert db is not None
    async with db.lock:
        return (await db.page_usage())[0]


async def test_full_disk_evicts_and_keeps_running(make_config: Callable[..., BufferConfig]
                                                  ) -> None:
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        buf.submit(readings("old", 20_000))
        await buf.flush()
        cap = await _page_count(buf) + 20
        await _cap_pages(buf, cap)
        sent = 20_000
        for _ in range(10):
            buf.submit(readings("new", 5000, start=sent))
            sent += 5000
            await buf.flush()
            assert await _page_count(buf) <= cap
        stats = await buf.stats()
        kept = await read_all(buf, "all")
    assert stats["errors"]["disk_full"] >= 1
    assert "full" in stats["last_error"]
    # Room was made by evicting the oldest readings: what is left is the newest.
    assert set(stats["drops"]) == {"disk_full"}
    assert len(kept) + stats["drops_total"] == sent
    assert [r.value for _, r in kept] == [float(i) for i in range(sent - len(kept), sent)]


async def test_batch_dropped_when_evicting_cannot_make_room(
        make_config: Callable[..., BufferConfig]) -> None:
    async with Buffer(make_config(), uplinks={"all": ["*"]}) as buf:
        async with running(buf):
            buf.submit(readings("old", 100))
            await buf.flush()
            await _cap_pages(buf, await _page_count(buf) + 2)
            with pytest.raises(StorageError) as err:
                async with asyncio.timeout(10):
                    await buf.append(readings("big", 20_000))  # larger than the whole disk
            assert err.value.reason == "disk_full"
            stats = await buf.stats()
            assert stats["alarm"] == "disk_full"
            assert stats["drops"]["disk_full"] == {"big": 20_000, "old": 100}
            # Still running: a batch that fits is committed and clears the alarm.
            async with asyncio.timeout(10):
                await buf.append(readings("small", 10))
            stats = await buf.stats()
            assert stats["alarm"] is None
            assert stats["errors"]["disk_full"] == 2  # the first try and the retry
            assert [r.device for _, r in await read_all(buf, "all")] == ["small"] * 10


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {where}"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def test_genuinely_full_filesystem(tmp_path: Path) -> None:
    """A 3 MiB tmpfs (in a user+mount namespace, no root needed) under a 32 MiB buffer."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("unprivileged user namespaces with tmpfs mounts are not available")
    script = (f"mount -t tmpfs -o size=3m tmpfs {mnt} && exec {sys.executable} {CHILD} "
              f"fill {mnt}/buffer.sqlite {32 * 1024 * 1024} {mnt}/ballast")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    *batches, reopened = lines
    own = [b for b in batches if b["phase"] == "own"]
    hog = [b for b in batches if b["phase"] == "hog"]
    freed = [b for b in batches if b["phase"] == "freed"]
    assert (len(own), len(hog), len(freed)) == (30, 6, 2)
    for b in batches:  # every reading is in the file or counted as dropped, exactly
        assert b["rows"] + b["drops_total"] == b["sent"]
    # Alone on the file system, the buffer works to the room there is (3 MiB less the
    # ballast and a reserve): it evicts its oldest rows and never meets a full disk.
    assert own[-1]["errors"] == {} and own[-1]["alarm"] is None
    assert own[-1]["effective_max_size"] < 3 * 1024 * 1024 < own[-1]["max_size"]
    assert set(own[-1]["drops"]) == {"buffer_full"}
    assert own[-1]["file_bytes"] <= own[-1]["effective_max_size"]
    # Another program takes the rest: the buffer shrinks further and keeps running.
    assert hog[-1]["effective_max_size"] < own[-1]["effective_max_size"]
    assert hog[-1]["file_bytes"] <= own[-1]["file_bytes"]
    # Space comes back: commits go through, the alarm clears, the working size grows.
    assert freed[-1]["alarm"] is None
    assert freed[-1]["committed_total"] == hog[-1]["committed_total"] + 1000
    assert freed[-1]["effective_max_size"] > hog[-1]["effective_max_size"]
    assert reopened == {"reopened_rows": freed[-1]["rows"]}
