"""The modbus driver: polls a device's planned reads on aligned cycles over a shared bus.

``run()`` opens (or joins) the device's bus, then runs one cycle loop per
distinct poll interval in a TaskGroup. A cycle sends the plan's requests for
that interval, unit by unit; a unit that times out loses the rest of its
requests in that cycle (a silent unit costs one timeout per cycle), and after
``quarantine_after`` consecutive timeouts it is quarantined: skipped, except
for one probe at growing intervals. Readings of a cycle go to the sink in one
``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatewayd.config.section import Section
from gatewayd.driver import DeviceConfig, Driver, Sink
from gatewayd.errors import DriverError, ProtocolError, WriteRefused
from gatewayd.reading import Reading, Value

from . import codec
from .bus import (
    GATEWAY_NO_RESPONSE,
    BusError,
    BusUnavailable,
    BusUser,
    ModbusBus,
    ModbusExceptionResponse,
    RequestTimeout,
    open_bus,
)
from .config import ModbusOptions, ModbusPoint, parse_options
from .plan import ReadRequest, build_plan
from .schedule import Admission, CycleClock, UnitQuarantine

log = logging.getLogger(__name__)


@dataclass
class PointStatus:
    """The running state of one point, shown in health()."""

    errors: int = 0
    last_error: str | None = None
    last_good_ns: int | None = None

    def failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.errors, "last_error": self.last_error,
                "last_good_ns": self.last_good_ns}


@dataclass
class Counters:
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exceptions: int = 0
    invalid_responses: int = 0
    unavailable: int = 0
    cycles: int = 0
    late_cycles: int = 0
    writes: int = 0
    writes_refused: int = 0
    write_errors: int = 0


class ModbusDriver(Driver):
    """Modbus TCP, RTU and RTU-over-TCP polling with planned reads and checked writes."""

    kind = "modbus"

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.options: ModbusOptions = device.options
        self.plan: tuple[ReadRequest, ...] = build_plan(self.options)
        self._points = {p.name: p for p in self.options.points}
        self.status = {p.name: PointStatus() for p in self.options.points}
        self.counters = Counters()
        self._units = {
            unit: UnitQuarantine(after=self.options.quarantine_after,
                                 interval=self.options.probe_interval,
                                 interval_max=self.options.probe_interval_max)
            for unit in sorted({r.unit for r in self.plan} | {self.options.unit_id})
        }
        self._request_errors: dict[ReadRequest, str] = {}
        self._unit_errors: dict[int, str] = {}
        self._bus: ModbusBus | None = None

    @classmethod
    def parse_options(cls, section: Section) -> ModbusOptions:
        return parse_options(section)

    # ---- polling -------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        opts = self.options
        user = BusUser(request_gap=opts.request_gap, reconnect_delay=opts.reconnect_delay,
                       reconnect_delay_max=opts.reconnect_delay_max)
        async with open_bus(opts.endpoint, device=self.name, user=user) as bus:
            self._bus = bus
            try:
                async with asyncio.TaskGroup() as tg:
                    for poll in sorted({r.poll for r in self.plan}):
                        group = [r for r in self.plan if r.poll == poll]
                        tg.create_task(self._poll_loop(bus, poll, group, sink),
                                       name=f"modbus {self.name} every {poll:g}s")
            finally:
                self._bus = None

    async def _poll_loop(self, bus: ModbusBus, poll: float, group: Sequence[ReadRequest],
                         sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        clock = CycleClock.aligned(poll, now=loop.time(), wall=time.time())
        by_unit: dict[int, list[ReadRequest]] = {}
        for request in group:
            by_unit.setdefault(request.unit, []).append(request)
        while True:
            delay = clock.due() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            skipped = clock.start(loop.time())
            if skipped:
                self.counters.late_cycles += skipped
                log.debug("device %s: %d late %gs cycle(s) skipped", self.name, skipped, poll)
            readings: list[Reading] = []
            units = list(by_unit.items())
            for index, (unit, requests) in enumerate(units):
                try:
                    await self._poll_unit(bus, unit, requests, readings)
                except BusUnavailable as err:
                    for _, not_sent in units[index + 1:]:  # the bus is down: skip the rest
                        for request in not_sent:
                            self._fail_points(request, str(err))
                    break
            self.counters.cycles += 1
            if readings:
                sink.submit(readings)
            clock.advance()

    async def _poll_unit(self, bus: ModbusBus, unit: int, requests: Sequence[ReadRequest],
                         readings: list[Reading]) -> None:
        """Run one unit's requests of a cycle. Raises BusUnavailable when the bus is down."""
        loop = asyncio.get_running_loop()
        quarantine = self._units[unit]
        admission = quarantine.admit(loop.time())
        if admission is Admission.SKIP:
            for request in requests:
                self._fail_points(request, f"unit {unit} quarantined ({self._unit_errors[unit]})",
                                  count=False)
            return
        for index, request in enumerate(requests):
            self.counters.requests += 1
            try:
                values = await bus.read(device=self.name, unit=unit, space=request.space,
                                        start=request.start, count=request.count,
                                        response_timeout=self.options.timeout)
            except RequestTimeout as err:
                self.counters.timeouts += 1
                self._unit_timed_out(unit, quarantine, str(err), requests[index:])
                return
            except ModbusExceptionResponse as err:
                self.counters.exceptions += 1
                self._request_failed(request, str(err))
                if err.code == GATEWAY_NO_RESPONSE:
                    # The gateway says the unit behind it is silent: a timeout.
                    self._unit_timed_out(unit, quarantine, str(err), requests[index + 1:])
                    return
                self._unit_answered(unit, quarantine)
                continue
            except BusUnavailable as err:
                self.counters.unavailable += 1
                quarantine.abandoned(loop.time())
                for not_sent in requests[index:]:
                    self._fail_points(not_sent, str(err))
                raise
            except BusError as err:
                self.counters.invalid_responses += 1
                self._request_failed(request, str(err))
                if admission is Admission.PROBE and quarantine.quarantined:
                    quarantine.abandoned(loop.time())  # no clear answer: probe again later
                    return
                continue
            self.counters.responses += 1
            self._unit_answered(unit, quarantine)
            self._request_ok(request)
            readings.extend(self._decode(request, values))

    def _unit_answered(self, unit: int, quarantine: UnitQuarantine) -> None:
        if quarantine.answered():
            log.info("device %s: unit %d answers again; quarantine lifted", self.name, unit)

    def _unit_timed_out(self, unit: int, quarantine: UnitQuarantine, message: str,
                        unanswered: Sequence[ReadRequest]) -> None:
        now = asyncio.get_running_loop().time()
        self._unit_errors[unit] = message
        was_quarantined = quarantine.quarantined
        if quarantine.timed_out(now):
            log.warning("device %s: unit %d quarantined after %d timeouts in a row; "
                        "probing every %gs", self.name, unit,
                        quarantine.consecutive_timeouts, quarantine.interval)
        elif not was_quarantined:
            log.warning("device %s: %s (%d of %d before quarantine)", self.name, message,
                        quarantine.consecutive_timeouts, quarantine.after)
        for request in unanswered:
            self._fail_points(request, message)

    def _request_ok(self, request: ReadRequest) -> None:
        if self._request_errors.pop(request, None) is not None:
            log.info("device %s: unit %d %s:%d+%d reads again", self.name, request.unit,
                     request.space, request.start, request.count)

    def _request_failed(self, request: ReadRequest, message: str) -> None:
        if self._request_errors.get(request) != message:
            log.warning("device %s: %s:%d+%d (%s): %s", self.name, request.space,
                        request.start, request.count, ", ".join(request.points), message)
            self._request_errors[request] = message
        self._fail_points(request, message)

    def _fail_points(self, request: ReadRequest, message: str, *, count: bool = True) -> None:
        for name in request.points:
            status = self.status[name]
            if count:
                status.failed(message)
            else:
                status.last_error = message

    def _decode(self, request: ReadRequest, values: list[int] | list[bool]) -> list[Reading]:
        now = time.time_ns()
        out: list[Reading] = []
        for name in request.points:
            point = self._points[name]
            status = self.status[name]
            try:
                value = decode_point(point, request, values)
            except (ProtocolError, ValueError) as err:
                status.failed(f"cannot decode: {err}")
                continue
            status.last_error = None
            status.last_good_ns = now
            out.append(Reading(self.name, name, value, point.unit, now))
        return out

    # ---- writes --------------------------------------------------------------

    async def write(self, point: str, value: Value) -> None:
        """Write ``value`` (engineering units) to ``point``.

        Raises WriteRefused when the point is unknown or not writable, or the
        value is of the wrong kind or outside the point's range; DriverError
        when the device does not accept it (timeout, Modbus exception, bus down).
        """
        spec = self._points.get(point)
        try:
            if spec is None:
                raise WriteRefused(f"no point {point!r}", device=self.name, point=point)
            registers = encode_write(spec, value, device=self.name)
        except WriteRefused as err:
            self.counters.writes_refused += 1
            log.warning("device %s: write to %s refused: %s", self.name, point, err)
            raise
        bus = self._bus
        if bus is None:
            raise DriverError("device is not running", device=self.name, point=point)
        self.counters.writes += 1
        try:
            await bus.write(device=self.name, unit=spec.unit_id, space=spec.space,
                            address=spec.address, values=registers,
                            multiple=self.options.write_multiple,
                            response_timeout=self.options.timeout)
        except BusError as err:
            self.counters.write_errors += 1
            log.warning("device %s: write to %s failed: %s", self.name, point, err)
            raise DriverError(f"write failed: {err}", device=self.name, point=point) from err
        log.info("device %s: wrote %r to %s", self.name, value, point)

    # ---- status --------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        c = self.counters
        bus = self._bus
        now = asyncio.get_running_loop().time() if bus is not None else 0.0
        units = {}
        for unit, q in self._units.items():
            units[str(unit)] = {
                "quarantined": q.quarantined,
                "consecutive_timeouts": q.consecutive_timeouts,
                "quarantines": q.quarantines,
                "next_probe_in_s": (round(max(0.0, q.next_probe - now), 3)
                                    if q.quarantined and bus is not None else None),
            }
        return {
            "endpoint": self.options.url,
            "connection": bus.health() if bus is not None else {"state": "stopped"},
            "requests": c.requests,
            "responses": c.responses,
            "timeouts": c.timeouts,
            "exceptions": c.exceptions,
            "invalid_responses": c.invalid_responses,
            "unavailable": c.unavailable,
            "cycles": c.cycles,
            "late_cycles": c.late_cycles,
            "requests_per_cycle": len(self.plan),
            "quarantined_units": [u for u, q in self._units.items() if q.quarantined],
            "units": units,
            "writes": c.writes,
            "writes_refused": c.writes_refused,
            "write_errors": c.write_errors,
            "points": {name: st.as_dict() for name, st in self.status.items()},
        }


# ---- pure helpers ------------------------------------------------------------------


def decode_point(point: ModbusPoint, request: ReadRequest,
                 values: Sequence[int] | Sequence[bool]) -> Value:
    """The point's value in engineering units from its request's response.

    Raises ProtocolError when the response cannot be decoded, ValueError when
    the device sent a float that is not finite (NaN, infinity), or one that scale
    and offset take beyond a float.
    """
    offset = point.address - request.start
    if request.space in ("co", "di"):
        return bool(values[offset])
    words = [int(v) for v in values[offset:offset + point.width]]
    if point.bit is not None:
        return codec.decode_bit(words[0], point.bit)
    raw = codec.decode(words, point.type, point.order)
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError(f"device sent {raw!r}")
    value = codec.scale_value(raw, point.scale, point.offset)
    if isinstance(value, float) and not math.isfinite(value):
        # a huge float64 times the point's scale: beyond what a float holds
        raise ValueError(f"device sent {raw!r}, beyond a float once scaled by {point.scale:g}")
    return value


def encode_write(point: ModbusPoint, value: Value, *, device: str) -> list[int] | list[bool]:
    """The registers (or the coil bit) that write ``value`` to ``point``.

    Raises WriteRefused naming the device and point when the point is not
    writable or the value is of the wrong kind, out of range or does not fit.
    """

    def refuse(message: str) -> WriteRefused:
        return WriteRefused(message, device=device, point=point.name)

    rng = point.writable
    if rng is None:
        raise refuse("point is not writable")
    vtype = point.type
    if vtype.name == "bool":
        if isinstance(value, bool):
            flag = value
        elif isinstance(value, int) and value in (0, 1):
            flag = bool(value)
        else:
            raise refuse(f"expected true or false, got {value!r}")
        return [flag] if point.space == "co" else codec.encode(flag, vtype, point.order)
    if vtype.name == "string":
        if not isinstance(value, str):
            raise refuse(f"expected a string, got {value!r}")
        try:
            return codec.encode(value, vtype, point.order)
        except ValueError as err:
            raise refuse(str(err)) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise refuse(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise refuse(f"{value!r} is not a finite number")
    if (rng.min is not None and value < rng.min) or (rng.max is not None and value > rng.max):
        raise refuse(f"value {value:g} is out of range [{rng.min:g}, {rng.max:g}]")
    try:
        raw: int | float
        if isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
            raw = value if vtype.is_integer else float(value)  # exact, even beyond 2**53
        else:
            raw = codec.unscale_value(float(value), vtype, point.scale, point.offset)
        return codec.encode(raw, vtype, point.order)
    except ValueError as err:
        raise refuse(str(err)) from None
