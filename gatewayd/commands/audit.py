"""The audit log: one JSON line per command event, appended and fsync'd.

Every command the gateway receives ends in exactly one final record
(``status`` ``ok``, ``refused`` or ``failed``, with the ``reason``); an
accepted command also gets an ``accepted`` record written *before* it acts,
so that a crash midway still leaves a trace, and a command is refused
(``audit log unavailable``) when that record cannot be written.

Bounded: when the file would exceed ``max_size`` it is renamed to
``audit.jsonl.1`` (replacing the previous one) and a new file begins, so the
log takes at most twice ``max_size``. Records never hold the token.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def iso_time(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds: ``2026-11-23T19:20:00.123Z``."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """Unix seconds of an ISO 8601 time (a time without zone is UTC); raises ValueError."""
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


class AuditLog:
    """Appends records to ``path`` (blocking: call through ``asyncio.to_thread``)."""

    def __init__(self, path: Path, *, max_size: int) -> None:
        self.path = path
        self.max_size = max_size
        self.records = 0
        self.rotations = 0

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record durably. Raises OSError when it cannot be written."""
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True, default=str)
                + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_size:
            os.replace(self.path, self.rotated)
            self.rotations += 1
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records += 1


def read_audit(path: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The records of the rotated file, then the current one, oldest first; with
    ``since`` (Unix seconds) only those at or after it. Unreadable lines are skipped.

    Raises OSError when neither file can be read."""
    rotated = path.with_name(path.name + ".1")
    found = False
    for file in (rotated, path):
        try:
            f = file.open("rb")
        except FileNotFoundError:
            continue
        found = True
        with f:
            for raw in f:
                try:
                    record = json.loads(raw)
                    when = parse_time(record["time"])
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(record, dict) and (since is None or when >= since):
                    yield record
    if not found:
        raise FileNotFoundError(2, "No such file or directory", str(path))
