"""``gatewayd`` with its buffer lock timed: a diagnostic for the store-and-forward bench.

Runs the daemon's own command line (``buffer_lock_timing.py run --config …``)
after replacing the ``asyncio.Lock`` of the buffer's database connection with one
that records, per holder (the code that took it), how often it was taken, how
long it was held and how long the holder waited for it. On SIGUSR1 the figures
since the previous SIGUSR1 are written as JSON to the file named by
``$GATEWAYD_LOCK_TIMING`` and the counts start over.

The daemon runs unchanged otherwise; the timing costs a few microseconds per
acquisition. Used by ``bench/store_forward.py --lock-timing``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gatewayd.buffer.database as database

# holder -> [acquisitions, seconds waited, seconds held, longest hold]
_TIMES: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])


def _holder(frame: FrameType | None) -> str:
    """The first two callers outside the lock's own frames (``async with`` included)."""
    names: list[str] = []
    while frame is not None and len(names) < 2:
        name = frame.f_code.co_qualname
        if not name.startswith(("Lock.", "TimedLock.", "_ContextManagerMixin.")):
            names.append(name)
        frame = frame.f_back
    return " < ".join(names)


class TimedLock(asyncio.Lock):
    _taken_at = 0.0
    _waited = 0.0
    _by = ""

    async def acquire(self) -> Literal[True]:
        asked = time.perf_counter()
        await super().acquire()
        self._taken_at = time.perf_counter()
        self._waited = self._taken_at - asked
        self._by = _holder(sys._getframe(1))
        return True

    def release(self) -> None:
        held = time.perf_counter() - self._taken_at
        t = _TIMES[self._by]
        t[0] += 1
        t[1] += self._waited
        t[2] += held
        t[3] = max(t[3], held)
        super().release()


def _dump(_signo: int, _frame: Any) -> None:
    out = {by: {"n": int(n), "wait_s": wait, "hold_s": hold, "max_hold_s": longest}
           for by, (n, wait, hold, longest) in _TIMES.items()}
    _TIMES.clear()
    Path(os.environ["GATEWAYD_LOCK_TIMING"]).write_text(json.dumps(out))


def main() -> int:
    original = database.Database.__init__

    def init(self: database.Database, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.lock = TimedLock()

    database.Database.__init__ = init  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _dump)
    from gatewayd.cli.daemon import main as gatewayd_main

    return gatewayd_main()


if __name__ == "__main__":
    sys.exit(main())
