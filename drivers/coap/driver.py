"""The coap driver: polls (GET) or observes (RFC 7641) resources of one CoAP device.

``run()`` opens the device's own client context, then runs one task per
resource path in a TaskGroup: a poll loop (GET on an aligned schedule) or an
observe loop (register, take every notification, register again when the
observation ends or lapses). Payloads become Readings in the pure
:mod:`.codec`; bad ones are counted by reason and never stop the device.

Whether the device answers is shared by its resources (:class:`~.schedule.Reachability`):
a request without an answer makes the device unreachable, and then only one
probe goes out per retry interval (``retry_delay`` doubling to
``retry_delay_max``) until it answers. A dead device therefore costs its own
retries only; every device has its own tasks and UDP socket, so another
device's polls are not delayed by it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gatewayd.config.section import Section
from gatewayd.driver import DeviceConfig, Driver, Sink
from gatewayd.errors import DriverError, WriteRefused
from gatewayd.polling import CycleClock
from gatewayd.reading import Value, now_ns

from .client import CoapClient, Observation, ObservationEnded, Response
from .codec import decode, encode_write
from .config import CoapOptions, CoapResource, parse_options
from .errors import CoapErrorResponse, CoapUnreachable, PayloadError
from .schedule import DEFAULT_MAX_AGE, Admission, Reachability, lapse_deadline

log = logging.getLogger(__name__)

REASONS = ("malformed", "missing_field", "invalid_value")
MAX_VALUES = 1024  # points shown in status (SenML packs may name new points)

REACHABLE = "reachable"
UNREACHABLE = "unreachable"
STOPPED = "stopped"


@dataclass
class ResourceStatus:
    """The running state of one resource path, shown in health()."""

    mode: str
    requests: int = 0
    responses: int = 0
    notifications: int = 0
    registrations: int = 0
    lapses: int = 0
    refreshes: int = 0
    errors: int = 0
    observing: bool = False
    max_age: float | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    last_good_ns: int | None = None

    def failed(self, err: BaseException, text: str | None = None) -> None:
        self.errors += 1
        self.last_error = text or str(err)
        self.last_error_kind = type(err).__name__

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode, "requests": self.requests, "responses": self.responses,
            "errors": self.errors, "last_error": self.last_error,
            "last_error_kind": self.last_error_kind, "last_good_ns": self.last_good_ns,
        }
        if self.mode == "observe":
            out.update(observing=self.observing, registrations=self.registrations,
                       notifications=self.notifications, lapses=self.lapses,
                       refreshes=self.refreshes,
                       max_age=self.max_age)
        return out


@dataclass
class Counters:
    requests: int = 0
    responses: int = 0
    timeouts: int = 0  # requests the device did not answer in time
    network_errors: int = 0  # requests the network refused (port/host unreachable)
    error_responses: int = 0  # 4.xx / 5.xx answers
    polls: int = 0
    skipped_polls: int = 0  # not sent: the device is unreachable and no retry was due
    late_polls: int = 0  # slots missed because the previous request ran long
    registrations: int = 0
    notifications: int = 0
    lapses: int = 0
    refreshes: int = 0
    observations_ended: int = 0
    not_observable: int = 0
    dropped_notifications: int = 0
    decode_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    writes: int = 0
    writes_refused: int = 0
    write_errors: int = 0


class CoapDriver(Driver):
    """One CoAP device: its resources polled or observed, writable ones PUT."""

    kind = "coap"

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.options: CoapOptions = device.options
        self.counters = Counters()
        self.reach = Reachability(delay=self.options.retry_delay,
                                  delay_max=self.options.retry_delay_max)
        self.state = STOPPED
        self.status = {r.path: ResourceStatus(mode=r.mode) for r in self.options.resources}
        self.values: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._client: CoapClient | None = None
        self._logged: set[tuple[str, str]] = set()  # (path, reason) logged since last good
        self._changed = asyncio.Event()

    @classmethod
    def parse_options(cls, section: Section) -> CoapOptions:
        return parse_options(section)

    # ---- status ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        c = self.counters
        now = asyncio.get_running_loop().time() if self._client is not None else 0.0
        return {
            "state": self.state,
            "url": self.options.url,
            "requests": c.requests,
            "responses": c.responses,
            "timeouts": c.timeouts,
            "network_errors": c.network_errors,
            "error_responses": c.error_responses,
            "polls": c.polls,
            "skipped_polls": c.skipped_polls,
            "late_polls": c.late_polls,
            "registrations": c.registrations,
            "notifications": c.notifications,
            "lapses": c.lapses,
            "refreshes": c.refreshes,
            "observations_ended": c.observations_ended,
            "not_observable": c.not_observable,
            "dropped_notifications": c.dropped_notifications,
            "decode_errors": dict(c.decode_errors),
            "writes": c.writes,
            "writes_refused": c.writes_refused,
            "write_errors": c.write_errors,
            "consecutive_failures": self.reach.failures,
            "retry_in_s": (round(self.reach.next_retry(now), 3)
                           if self._client is not None and not self.reach.reachable else None),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "resources": {path: st.as_dict() for path, st in self.status.items()},
            "values": dict(self.values),
        }

    async def wait_until(self, predicate: Callable[[CoapDriver], bool]) -> None:
        """Return once ``predicate(self)`` holds; checked after every request, poll,
        notification and change of reachability (bound the wait with a timeout)."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- the device's life ----------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Poll and observe the device's resources into ``sink`` until cancelled."""
        async with CoapClient.open(self.options, device=self.name) as client:
            self._client = client
            self.state = REACHABLE if self.reach.reachable else UNREACHABLE
            log.info("device %s: %s, %d resource(s)", self.name, self.options.url,
                     len(self.options.resources))
            try:
                async with asyncio.TaskGroup() as tg:
                    for res in self.options.resources:
                        loop = self._poll_loop if res.mode == "poll" else self._observe_loop
                        tg.create_task(loop(client, res, sink),
                                       name=f"coap {self.name} {res.mode} {res.path}")
            finally:
                self._client = None
                self.state = STOPPED
                self.reach.abandoned()
                for st in self.status.values():
                    st.observing = False

    async def _exchange(self, admission: Admission,
                        call: Callable[[], Awaitable[Response]]) -> Response:
        """One request, its outcome reported to the device's reachability.
        Raises CoapUnreachable, DriverError."""
        self.counters.requests += 1
        try:
            response = await call()
        except CoapUnreachable as err:
            self._unreachable(err, probe=admission is Admission.PROBE)
            raise
        except BaseException:
            if admission is Admission.PROBE:
                self.reach.abandoned()
                self._notify()
            raise
        self.counters.responses += 1
        if self.reach.answered():
            log.info("device %s: answers again", self.name)
        self.state = REACHABLE
        self._notify()
        return response

    def _unreachable(self, err: CoapUnreachable, *, probe: bool) -> None:
        if err.timed_out:
            self.counters.timeouts += 1
        else:
            self.counters.network_errors += 1
        self._error(str(err))
        now = asyncio.get_running_loop().time()
        was_reachable = self.reach.reachable
        if was_reachable or probe:
            wait = self.reach.failed(now)
            if was_reachable:
                log.warning("device %s: %s: %s; retrying in %gs, doubling up to %gs",
                            self.name, self.options.url, err, wait,
                            self.options.retry_delay_max)
            else:
                log.debug("device %s: %s (%d in a row); next retry in %gs", self.name, err,
                          self.reach.failures, wait)
        self.state = UNREACHABLE
        self._notify()

    async def _admitted(self) -> Admission:
        """Wait until a request may be sent: at once while the device answers, else
        until its retry is due and no other probe is in flight."""
        loop = asyncio.get_running_loop()
        while True:
            changed = self._changed
            admission = self.reach.admit(loop.time())
            if admission is not Admission.WAIT:
                return admission
            wait = None if self.reach.probing else self.reach.next_retry(loop.time())
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                pass

    def _error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

    # ---- polling --------------------------------------------------------------------

    async def _poll_loop(self, client: CoapClient, res: CoapResource, sink: Sink) -> None:
        assert res.poll is not None
        loop = asyncio.get_running_loop()
        clock = CycleClock.aligned(res.poll, now=loop.time(), wall=time.time())
        while True:
            delay = clock.due() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = clock.start(loop.time())
            if late:
                self.counters.late_polls += late
            admission = self.reach.admit(loop.time())
            if admission is Admission.WAIT:
                self.counters.skipped_polls += 1
            else:
                self.counters.polls += 1
                await self._poll_once(client, res, admission, sink)
            clock.advance()
            self._notify()

    async def _poll_once(self, client: CoapClient, res: CoapResource, admission: Admission,
                         sink: Sink) -> None:
        st = self.status[res.path]
        st.requests += 1
        try:
            response = await self._exchange(admission, lambda: client.get(res.path))
        except DriverError as err:
            st.failed(err)
            return
        st.responses += 1
        self._deliver(res, response, sink)

    # ---- observing ------------------------------------------------------------------

    async def _observe_loop(self, client: CoapClient, res: CoapResource, sink: Sink) -> None:
        refusals = Reachability(delay=self.options.retry_delay,
                                delay_max=self.options.retry_delay_max)
        while True:
            admission = await self._admitted()
            wait = await self._observe_once(client, res, admission, refusals, sink)
            self._notify()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _observe_once(self, client: CoapClient, res: CoapResource, admission: Admission,
                            refusals: Reachability, sink: Sink) -> float:
        """One registration and its notifications; returns the wait before the next."""
        loop = asyncio.get_running_loop()
        st = self.status[res.path]
        st.registrations += 1
        st.requests += 1
        self.counters.registrations += 1
        async with client.observe(res.path) as obs:
            try:
                first = await self._exchange(admission, obs.first)
            except CoapUnreachable as err:
                st.failed(err)
                return 0.0  # the next registration waits for the device's retry
            except DriverError as err:
                st.failed(err)
                return refusals.failed(loop.time())
            st.responses += 1
            if not self._deliver(res, first, sink) and not first.ok:
                return refusals.failed(loop.time())
            st.max_age = first.max_age
            if first.observe is None:
                self.counters.not_observable += 1
                self._log_once(res.path, "not_observable", logging.WARNING,
                               "device %s: %s answered without registering the observation; "
                               "asking again when the value is stale", self.name, res.path)
                stale_in = DEFAULT_MAX_AGE if first.max_age is None else first.max_age
                return max(stale_in, self.options.retry_delay)
            refusals.answered()
            return await self._notifications(res, obs, refusals, sink)

    async def _notifications(self, res: CoapResource, obs: Observation, refusals: Reachability,
                             sink: Sink) -> float:
        loop = asyncio.get_running_loop()
        st = self.status[res.path]
        st.observing = True
        self._notify()
        grace = self.options.observe_grace
        refresh = self.options.observe_refresh
        refresh_at = loop.time() + refresh if refresh is not None else math.inf
        lapse_at = lapse_deadline(loop.time(), st.max_age, grace)
        try:
            while True:
                try:
                    note = await obs.next(min(lapse_at, refresh_at))
                except TimeoutError:
                    if refresh_at < lapse_at:
                        st.refreshes += 1
                        self.counters.refreshes += 1
                        log.debug("device %s: %s observed for %gs; registering again",
                                  self.name, res.path, refresh)
                        return 0.0
                    st.lapses += 1
                    self.counters.lapses += 1
                    log.info("device %s: no notification of %s within its max-age + %gs; "
                             "registering again", self.name, res.path, grace)
                    return 0.0
                except ObservationEnded as ended:
                    self.counters.observations_ended += 1
                    if ended.unreachable is not None:
                        st.failed(ended.unreachable)
                        self._unreachable(ended.unreachable, probe=False)
                        return 0.0
                    self._error(f"{res.path}: {ended}")
                    log.info("device %s: %s: %s; registering again", self.name, res.path, ended)
                    return refusals.failed(loop.time())
                st.notifications += 1
                self.counters.notifications += 1
                st.max_age = note.max_age
                lapse_at = lapse_deadline(loop.time(), note.max_age, grace)
                self._deliver(res, note, sink)
                self._notify()
        finally:
            st.observing = False
            self.counters.dropped_notifications += obs.dropped

    # ---- payloads -------------------------------------------------------------------

    def _deliver(self, res: CoapResource, response: Response, sink: Sink) -> bool:
        """Decode one response into readings for ``sink``; returns True when the
        payload gave every point without error."""
        st = self.status[res.path]
        if not response.ok:
            self.counters.error_responses += 1
            err = CoapErrorResponse(f"{res.path}: answered {response.text}", device=self.name,
                                    code=response.code)
            st.failed(err)
            self._error(str(err))
            self._log_once(res.path, response.code, logging.WARNING, "device %s: %s",
                           self.name, err)
            return False
        at = now_ns()
        try:
            decoded = decode(res, response.payload, device=self.name, now_ns=at)
        except PayloadError as err:
            self._bad_payload(res, err)
            return False
        for _, perr in decoded.errors:
            self._bad_payload(res, perr)
        if decoded.readings:
            sink.submit(decoded.readings)
            for r in decoded.readings:
                self._remember(r.point, r.value, r.unit, r.time)
            st.last_good_ns = at
        if not decoded.errors:
            st.last_error = None
            st.last_error_kind = None
            if any(path == res.path for path, _ in self._logged):
                self._logged = {k for k in self._logged if k[0] != res.path}
                log.info("device %s: %s reads again", self.name, res.path)
        return not decoded.errors

    def _bad_payload(self, res: CoapResource, err: PayloadError) -> None:
        self.counters.decode_errors[err.reason] += 1
        self.status[res.path].failed(err)
        self._error(str(err))
        self._log_once(res.path, err.reason, logging.WARNING,
                       "device %s: bad payload: %s (%s); further ones are only counted",
                       self.name, err, type(err).__name__)

    def _log_once(self, path: str, reason: str, level: int, msg: str, *args: Any) -> None:
        key = (path, reason)
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, msg, *args)

    def _remember(self, point: str, value: Value, unit: str | None, at: int) -> None:
        shown = value.hex() if isinstance(value, bytes) else value
        self.values[point] = {"value": shown, "unit": unit, "time": at}
        self.values.move_to_end(point)
        while len(self.values) > MAX_VALUES:
            self.values.popitem(last=False)

    # ---- writes ---------------------------------------------------------------------

    async def write(self, point: str, value: Value) -> None:
        """PUT ``value`` (engineering units) to ``point``'s resource.

        Raises WriteRefused when the point is unknown or not writable, or the
        value is of the wrong kind or outside the point's range; CoapErrorResponse
        when the device answers with an error code; DriverError when it does not
        answer or the device is not running.
        """
        spec = self.options.point(point)
        try:
            if spec is None:
                raise WriteRefused(f"no point {point!r}", device=self.name, point=point)
            payload, content_format = encode_write(spec, value, device=self.name)
        except WriteRefused as err:
            self.counters.writes_refused += 1
            log.warning("device %s: write to %s refused: %s", self.name, point, err)
            raise
        client = self._client
        if client is None:
            raise DriverError("device is not running", device=self.name, point=point)
        self.counters.writes += 1
        try:
            response = await self._exchange(
                Admission.SEND, lambda: client.put(spec.path, payload, content_format))
        except DriverError as err:
            self.counters.write_errors += 1
            log.warning("device %s: write to %s failed: %s", self.name, point, err)
            raise DriverError(f"write failed: {err}", device=self.name, point=point) from err
        if not response.ok:
            self.counters.write_errors += 1
            log.warning("device %s: write to %s refused by the device: %s", self.name, point,
                        response.text)
            raise CoapErrorResponse(f"write refused by the device: {response.text}",
                                    device=self.name, code=response.code, point=point)
        log.info("device %s: wrote %r to %s", self.name, value, point)
