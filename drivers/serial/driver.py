"""The serial driver: NMEA receivers, line-printing instruments and binary framed devices.

``run`` owns the port for the device's whole life: it opens the port, reads
whatever arrives (streaming) or also sends the query every ``poll`` (polled),
and when the adapter goes away it reports ``disconnected`` and reopens the
port by itself with a doubling backoff (``reopen_delay`` to
``reopen_delay_max``, forever). Everything between bytes and points is the
sans-IO :class:`~.codec.SerialCodec`; bad input is counted, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gatewayd.changes import Changes
from gatewayd.config.section import Section
from gatewayd.driver import DeviceConfig, Driver, Sink
from gatewayd.reading import Reading, now_ns

from .codec import SerialCodec, build_codec
from .config import PollSettings, SerialOptions, parse_options
from .parsers import Point
from .port import PortLost, PortUnavailable, SerialPort

log = logging.getLogger(__name__)

CONNECTED = "connected"
DISCONNECTED = "disconnected"


class SerialDriver(Driver):
    """One device on one serial port."""

    kind = "serial"

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.options: SerialOptions = device.options
        self.codec: SerialCodec = build_codec(self.options)
        self.state = DISCONNECTED
        self.device_path: str | None = None  # what the port path resolved to when opened
        self.connected_since: float | None = None
        self.connects = 0
        self.disconnects = 0
        self.reopen_attempts = 0  # failed attempts to open the port, in total
        self.polls = 0
        self.timeouts = 0
        self.late_polls = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._records = 0  # records decoded since start: what a poll waits for
        self._record_arrived = asyncio.Event()
        self._changes = Changes()  # notified on every status change
        self._errors_logged = False  # one protocol error is logged per connection
        self._timeouts_in_row = 0

    @classmethod
    def parse_options(cls, section: Section) -> SerialOptions:
        return parse_options(section)

    # ---- status ---------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {
            "state": self.state,
            "port": o.port.path,
            "device_path": self.device_path,
            "line": o.port.line,
            "protocol": o.protocol,
            "connected_since": self.connected_since,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "reopen_attempts": self.reopen_attempts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            **self.codec.stats(),
            "last_protocol_error": self.codec.last_error,
        }
        if o.poll is not None:
            out.update(polls=self.polls, timeouts=self.timeouts, late_polls=self.late_polls)
        return out

    async def wait_until(self, predicate: Callable[[SerialDriver], bool]) -> None:
        """Return once ``predicate(self)`` holds; it is checked after every change of
        state, failed open and finished poll (bound the wait with a timeout)."""
        await self._changes.until(lambda: self, predicate)

    async def wait_state(self, state: str) -> None:
        """Return once the driver is in ``state`` (``connected`` or ``disconnected``)."""
        await self.wait_until(lambda d: d.state == state)

    def _notify(self) -> None:
        self._changes.notify()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._notify()

    def _error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

    # ---- the port's life ------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Read the device into ``sink`` until cancelled; reopens the port by itself."""
        reopen = self.options.reopen
        failures = 0  # consecutive failed opens
        while True:
            try:
                port = SerialPort.open(self.options.port, device=self.name)
            except PortUnavailable as err:
                self._open_failed(err, failures)
                await asyncio.sleep(reopen.after(failures))
                failures += 1
                continue
            bytes_before = self.codec.framer.bytes_in
            try:
                with port:
                    self._opened(port)
                    await self._session(port, sink)
            except* PortLost as group:
                self._closed(group.exceptions[0])
            finally:
                self._set_state(DISCONNECTED)
            # A port that fails before a single byte came in backs off like a failed
            # open (a flapping adapter); one that worked starts the backoff again.
            failures = 0 if self.codec.framer.bytes_in > bytes_before else failures + 1
            await asyncio.sleep(reopen.after(failures))

    def _open_failed(self, err: PortUnavailable, failures: int) -> None:
        self.reopen_attempts += 1
        self._error(str(err))
        if failures == 0:
            log.warning("device %s: %s; retrying, %gs doubling up to %gs", self.name, err,
                        self.options.reopen.delay, self.options.reopen.max_delay)
        else:
            log.debug("device %s: %s (attempt %d)", self.name, err, failures + 1)
        self._notify()

    def _opened(self, port: SerialPort) -> None:
        self.connects += 1
        self.device_path = port.resolved
        self.connected_since = time.time()
        self._errors_logged = False
        self.codec.reset()
        shown = self.options.port.path
        if port.resolved != shown:
            shown = f"{shown} ({port.resolved})"
        log.info("device %s: %s open, %s, protocol %s", self.name, shown,
                 self.options.port.line, self.options.protocol)
        self._set_state(CONNECTED)

    def _closed(self, err: BaseException) -> None:
        self.disconnects += 1
        self.connected_since = None
        self._error(str(err))
        log.warning("device %s: disconnected: %s; reopening", self.name, err)

    async def _session(self, port: SerialPort, sink: Sink) -> None:
        poll = self.options.poll
        if poll is None:
            await self._read_loop(port, sink)
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_loop(port, sink))
            tg.create_task(self._poll_loop(port, poll))

    # ---- reading --------------------------------------------------------------

    async def _read_loop(self, port: SerialPort, sink: Sink) -> None:
        while True:
            data = await port.read()
            self._consume(data, sink)

    def _consume(self, data: bytes, sink: Sink) -> None:
        errors_before = self.codec.errors
        records = self.codec.feed(data)
        if records:
            at = now_ns()
            readings = [self._reading(p, at) for points in records for p in points]
            if readings:
                sink.submit(readings)
            self._records += len(records)
            self._record_arrived.set()
        if self.codec.errors != errors_before and not self._errors_logged:
            self._errors_logged = True
            log.warning("device %s: bad input (%s); further errors are only counted",
                        self.name, self.codec.last_error or "framing error")

    def _reading(self, p: Point, at: int) -> Reading:
        return Reading(self.name, p.name, p.value, p.unit, at)

    # ---- polling --------------------------------------------------------------

    async def _poll_loop(self, port: SerialPort, poll: PollSettings) -> None:
        """Send the query on an aligned schedule and wait for the replies each time."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            delay = start + tick * poll.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > poll.interval:
                skipped = int(-delay // poll.interval)  # late by whole periods: skip them
                self.late_polls += skipped
                tick += skipped
            tick += 1
            await self._poll_once(port, poll)

    async def _poll_once(self, port: SerialPort, poll: PollSettings) -> None:
        self.polls += 1
        self.codec.reset()  # what is left of an earlier reply is stale now
        target = self._records + poll.replies
        try:
            await self._exchange(port, poll, target)
        finally:
            self._notify()

    async def _exchange(self, port: SerialPort, poll: PollSettings, target: int) -> None:
        try:
            async with asyncio.timeout(poll.timeout):
                await port.write(poll.query)
                while self._records < target:
                    self._record_arrived.clear()
                    await self._record_arrived.wait()
        except TimeoutError:
            self.timeouts += 1
            self._timeouts_in_row += 1
            self._error(f"no reply within {poll.timeout:g}s")
            if self._timeouts_in_row == 1:
                log.warning("device %s: no reply within %gs", self.name, poll.timeout)
            return
        if self._timeouts_in_row:
            log.info("device %s: replying again after %d timeouts", self.name,
                     self._timeouts_in_row)
            self._timeouts_in_row = 0
