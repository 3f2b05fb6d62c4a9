"""The replay cache: every ``jti`` the gateway has accepted, until its token expires.

:class:`ReplayCache` is pure (the caller passes the clock). :class:`ReplayJournal`
keeps it on disk so that it survives restarts: one JSON line per ``jti``,
appended and fsync'd *before* the command acts, and rewritten without the
expired entries at start and whenever it has grown to twice the live
entries. Its blocking calls go through ``asyncio.to_thread``.

Bounded: an entry lives until its token's ``exp`` plus the clock skew (after
that the token is refused as expired anyway), and the cache holds at most
``max_entries``; when full, new commands are refused rather than an entry
forgotten early.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

MAX_ENTRIES: Final = 100_000


class ReplayCache:
    """``jti`` -> the time (Unix seconds) until which it must be refused."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # heap

    def __len__(self) -> int:
        return len(self._until)

    def purge(self, now: float) -> int:
        """Forget every entry that expired before ``now``; returns how many."""
        dropped = 0
        while self._expiry and self._expiry[0][0] < now:
            until, jti = heapq.heappop(self._expiry)
            if self._until.get(jti) == until:
                del self._until[jti]
                dropped += 1
        return dropped

    def seen(self, jti: str, now: float) -> bool:
        until = self._until.get(jti)
        return until is not None and until >= now

    def full(self, now: float) -> bool:
        self.purge(now)
        return len(self._until) >= self.max_entries

    def add(self, jti: str, until: float) -> None:
        if until <= self._until.get(jti, float("-inf")):
            return
        self._until[jti] = until
        heapq.heappush(self._expiry, (until, jti))

    def entries(self) -> dict[str, float]:
        return dict(self._until)


class ReplayJournal:
    """The replay cache's file (blocking I/O)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0  # lines in the file
        self.skipped = 0  # unreadable lines found at load (a torn last write)

    def load(self, cache: ReplayCache, now: float) -> None:
        """Fill ``cache`` from the file, then rewrite the file with the live entries."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with self.path.open("rb") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                        jti, until = entry["jti"], float(entry["until"])
                        if not isinstance(jti, str):
                            raise TypeError("jti")
                    except (ValueError, TypeError, KeyError):
                        self.skipped += 1
                        continue
                    if until >= now:
                        cache.add(jti, until)
        except FileNotFoundError:
            pass
        if self.skipped:
            log.warning("replay cache %s: %d unreadable line(s) skipped", self.path,
                        self.skipped)
        self.compact(cache)

    def append(self, jti: str, until: float) -> None:
        """Record one entry durably (written and fsync'd when this returns).

        Raises OSError when the file cannot be written."""
        line = json.dumps({"jti": jti, "until": until}, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.lines += 1

    def needs_compaction(self, cache: ReplayCache) -> bool:
        return self.lines > 2 * len(cache) + 1024

    def compact(self, cache: ReplayCache) -> None:
        """Rewrite the file with exactly the cache's entries (atomic rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        entries = cache.entries()
        data = "".join(json.dumps({"jti": j, "until": u}, separators=(",", ":")) + "\n"
                       for j, u in entries.items())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.lines = len(entries)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
