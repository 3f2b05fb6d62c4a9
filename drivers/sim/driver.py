"""The sim driver: polls simulated points on an aligned schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from gatewayd.config.section import (
    Section,
    choice,
    duration,
    integer,
    nonempty_string,
    number,
    string,
)
from gatewayd.driver import DeviceConfig, Driver, Sink
from gatewayd.errors import DriverError
from gatewayd.polling import CycleClock
from gatewayd.reading import Reading

from .signals import SIGNALS, SignalState, SimPoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimOptions:
    poll: float
    points: tuple[SimPoint, ...]
    limit: int  # stop after this many polls (0 = never)
    fail_after: int  # raise after this many polls of each run (0 = never): fault drills
    wedge_after: int  # block the event loop after this many polls (0 = never): watchdog drill


class SimDriver(Driver):
    kind = "sim"

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.options: SimOptions = device.options
        self.polls = 0
        self.late_cycles = 0
        self._states = [SignalState(p) for p in self.options.points]

    @classmethod
    def parse_options(cls, s: Section) -> SimOptions:
        poll = s.get("poll", duration(lo=0.001), 1.0)
        points: list[SimPoint] = []
        seen: set[str] = set()
        for ps in s.table_list("points", required=True):
            name = ps.get("name", nonempty_string)
            if name in seen:
                ps.error("name", f"duplicate point name {name!r}")
            seen.add(name)
            if name and "/" in name:
                ps.error("name", f"invalid point name {name!r}; '/' is not allowed")
            points.append(SimPoint(
                name=name,
                signal=ps.get("signal", choice(*SIGNALS)),
                min=ps.get("min", number, 0.0),
                max=ps.get("max", number, 1.0),
                period=ps.get("period", duration(lo=0.001), 60.0),
                step=ps.get("step", number, 0.1),
                seed=ps.get("seed", integer(), 0),
                value=ps.get("value", number, 0.0),
                unit=ps.get("unit", string, None),
            ))
            ps.done()
        return SimOptions(
            poll=poll,
            points=tuple(points),
            limit=s.get("limit", integer(0), 0),
            fail_after=s.get("fail_after", integer(0), 0),
            wedge_after=s.get("wedge_after", integer(0), 0),
        )

    async def run(self, sink: Sink) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        start = loop.time()
        polls_this_run = 0
        clock = CycleClock(opts.poll, origin=start)
        while not opts.limit or self.polls < opts.limit:
            delay = clock.due() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # Late by a whole period or more: the missed cycles are skipped and counted.
            self.late_cycles += clock.start(loop.time())
            clock.advance()
            if opts.fail_after and polls_this_run >= opts.fail_after:
                raise DriverError(f"simulated failure after {polls_this_run} polls",
                                  device=self.name)
            if opts.wedge_after and self.polls >= opts.wedge_after:
                log.critical("device %s: wedging the event loop (wedge_after drill)", self.name)
                while True:
                    time.sleep(3600)  # noqa: ASYNC251 - deliberately blocking: the watchdog must notice
            now = time.time_ns()
            elapsed = loop.time() - start
            sink.submit([
                Reading(self.name, st.point.name, st.next(elapsed), st.point.unit, now)
                for st in self._states
            ])
            self.polls += 1
            polls_this_run += 1
        log.info("device %s: sim limit of %d polls reached", self.name, opts.limit)

    def health(self) -> dict[str, Any]:
        return {"polls": self.polls, "late_cycles": self.late_cycles}
