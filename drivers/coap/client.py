"""The thin aiocoap adapter of the coap driver: requests and observations of one device.

aiocoap's exceptions are converted here, once, into :class:`~.errors.CoapUnreachable`;
its messages into :class:`Response`. Each device has its own client context
(its own UDP socket and message layer): aiocoap keeps one outstanding
confirmable exchange per peer (NSTART = 1) and, when a peer stops answering,
fails every request to it, so sharing a context would let one device's
silence reach another.

Retransmissions are fitted to the request timeout: with ``ack_timeout`` and
``timeout`` the message layer retransmits as often as the worst case still
fits in ``timeout`` (see :func:`~.config.max_retransmit`), so it has given up
by the time the request's deadline passes and never holds the exchange slot
beyond it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiocoap
import aiocoap.error
from aiocoap.numbers.constants import TransportTuning

from gatewayd.errors import DriverError

from .config import ACK_RANDOM_FACTOR as RANDOM_FACTOR
from .config import CoapOptions
from .errors import CoapUnreachable

log = logging.getLogger(__name__)

MAX_PENDING_NOTIFICATIONS = 256  # notifications not yet taken; the oldest is dropped beyond


@dataclass(frozen=True, slots=True)
class Response:
    """What a device answered: the parts the driver reads."""

    code: str  # dotted: "2.05"
    text: str  # "2.05 Content"
    ok: bool  # a 2.xx code
    payload: bytes
    max_age: float | None
    observe: int | None  # the Observe option of an observation's response

    @classmethod
    def of(cls, message: Any) -> Response:
        code = message.code
        text = str(code)
        if not code.is_successful():
            diagnostic = bytes(message.payload[:80]).decode("utf-8", "replace")
            if diagnostic and diagnostic != code.name_printable:
                text += f" ({diagnostic})"
        return cls(code=code.dotted, text=text, ok=bool(code.is_successful()),
                   payload=bytes(message.payload), max_age=message.opt.max_age,
                   observe=message.opt.observe)


def _tuning(options: CoapOptions) -> TransportTuning:
    """aiocoap's transport parameters with ours set on the instance (its derived
    values, such as MAX_TRANSMIT_WAIT, read them from there)."""
    tuning = TransportTuning()
    tuning.ACK_TIMEOUT = options.ack_timeout
    tuning.ACK_RANDOM_FACTOR = RANDOM_FACTOR
    tuning.MAX_RETRANSMIT = options.max_retransmit
    return tuning


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a response nobody awaits any more as seen."""
    if not future.cancelled():
        future.exception()


class ObservationEnded(Exception):
    """The observation is over: the server ended it, or the device went silent
    (``unreachable`` then holds the converted error)."""

    def __init__(self, message: str, *, unreachable: CoapUnreachable | None = None) -> None:
        self.unreachable = unreachable
        super().__init__(message)


class CoapClient:
    """Requests to one device, bounded by its timeout; aiocoap errors converted."""

    def __init__(self, ctx: Any, options: CoapOptions, *, device: str) -> None:
        self._ctx = ctx
        self.options = options
        self.device = device
        self._tuning = _tuning(options)

    @classmethod
    @asynccontextmanager
    async def open(cls, options: CoapOptions, *, device: str) -> AsyncIterator[CoapClient]:
        """A client with its own context; shut down on exit. Raises DriverError when
        no UDP socket can be opened."""
        try:
            ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        except OSError as err:
            raise DriverError(f"cannot open a UDP socket: {err.strerror or err}",
                              device=device) from err
        try:
            yield cls(ctx, options, device=device)
        finally:
            await asyncio.shield(ctx.shutdown())

    def _message(self, code: Any, path: str, **kw: Any) -> Any:
        return aiocoap.Message(code=code, uri=self.options.endpoint.uri(path),
                               transport_tuning=self._tuning, **kw)

    def unreachable(self, err: BaseException) -> CoapUnreachable:
        """The CoapUnreachable that stands for an aiocoap (or timeout) error."""
        if isinstance(err, TimeoutError):
            return CoapUnreachable(f"no answer within {self.options.timeout:g}s",
                                   device=self.device, timed_out=True)
        if isinstance(err, aiocoap.error.ConRetransmitsExceeded):
            sent = self.options.max_retransmit + 1
            return CoapUnreachable(f"no answer ({sent} transmission{'s' if sent > 1 else ''})",
                                   device=self.device, timed_out=True)
        if isinstance(err, aiocoap.error.TimeoutError):
            return CoapUnreachable(f"no answer ({type(err).__name__})", device=self.device,
                                   timed_out=True)
        if isinstance(err, aiocoap.error.ResolutionError):
            return CoapUnreachable(f"cannot resolve {self.options.endpoint.host}",
                                   device=self.device, timed_out=False)
        cause = err.__cause__
        if isinstance(cause, OSError) and cause.strerror:
            return CoapUnreachable(cause.strerror.split(" (")[0], device=self.device,
                                   timed_out=False)
        return CoapUnreachable(f"network error ({type(err).__name__})", device=self.device,
                               timed_out=False)

    async def _send(self, message: Any) -> Response:
        try:
            answer = await self.wait_response(self._ctx.request(message))
        except (TimeoutError, aiocoap.error.NetworkError) as err:
            raise self.unreachable(err) from err
        except aiocoap.error.Error as err:
            raise DriverError(f"request failed: {err}", device=self.device) from err
        return Response.of(answer)

    async def get(self, path: str) -> Response:
        """GET ``path``. Raises CoapUnreachable (no answer), DriverError."""
        return await self._send(self._message(aiocoap.GET, path))

    async def put(self, path: str, payload: bytes, content_format: int) -> Response:
        """PUT ``payload`` to ``path``. Raises CoapUnreachable (no answer), DriverError."""
        return await self._send(self._message(aiocoap.PUT, path, payload=payload,
                                              content_format=content_format))

    async def wait_response(self, request: Any) -> Any:
        """The response of an aiocoap request, within the timeout. aiocoap's future is
        shielded, never cancelled: its blockwise runner may still set a result on a
        future cancelled in the same loop turn (and log an internal error); the
        exchange ends by itself, the retransmissions being fitted to the timeout."""
        future = request.response
        future.add_done_callback(_retrieve)
        async with asyncio.timeout(self.options.timeout):
            return await asyncio.shield(future)

    @asynccontextmanager
    async def observe(self, path: str) -> AsyncIterator[Observation]:
        """Register an observation of ``path`` (GET with Observe: 0); it is
        cancelled on exit."""
        request = self._ctx.request(self._message(aiocoap.GET, path, observe=0))
        observation = Observation(self, request)
        try:
            yield observation
        finally:
            observation.cancel()


class Observation:
    """One registration: its first response, then every notification in order.

    aiocoap's own ``async for`` over an observation keeps only the latest
    notification (it is lossy by design); here every notification is queued
    (bounded, oldest dropped and counted) from aiocoap's callback, so a burst
    is delivered whole. aiocoap already drops notifications older than the
    latest by their Observe sequence number (RFC 7641 §3.4).
    """

    def __init__(self, client: CoapClient, request: Any) -> None:
        self._client = client
        self._request = request
        self._pending: collections.deque[Response] = collections.deque()
        self._ended: BaseException | None = None
        self._arrived = asyncio.Event()
        self.dropped = 0
        # The documented callbacks; "_suppress_deprecation" is what aiocoap's own
        # iterator passes (only the lossy iterator is the recommended interface).
        request.observation.register_callback(self._push, _suppress_deprecation=True)
        request.observation.register_errback(self._push_error, _suppress_deprecation=True)

    def _push(self, message: Any) -> None:
        if len(self._pending) >= MAX_PENDING_NOTIFICATIONS:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(Response.of(message))
        self._arrived.set()

    def _push_error(self, err: BaseException) -> None:
        self._ended = err
        self._arrived.set()

    async def first(self) -> Response:
        """The registration's response. Raises CoapUnreachable, DriverError."""
        try:
            answer = await self._client.wait_response(self._request)
        except (TimeoutError, aiocoap.error.NetworkError) as err:
            raise self._client.unreachable(err) from err
        except aiocoap.error.Error as err:
            raise DriverError(f"observe request failed: {err}",
                              device=self._client.device) from err
        return Response.of(answer)

    async def next(self, deadline: float) -> Response:
        """The next notification. Raises TimeoutError when none arrives before
        ``deadline`` (loop time), ObservationEnded when the observation is over."""
        async with asyncio.timeout_at(deadline):
            while not self._pending:
                if self._ended is not None:
                    raise self._end()
                self._arrived.clear()
                await self._arrived.wait()
        return self._pending.popleft()

    def _end(self) -> ObservationEnded:
        err = self._ended
        if isinstance(err, aiocoap.error.NotObservable):
            return ObservationEnded("the resource is not observable")
        if isinstance(err, aiocoap.error.ObservationCancelled):
            return ObservationEnded("the server ended the observation")
        if isinstance(err, (aiocoap.error.NetworkError, TimeoutError)):
            unreachable = self._client.unreachable(err)
            return ObservationEnded(str(unreachable), unreachable=unreachable)
        return ObservationEnded(f"observation failed: {err}")

    def cancel(self) -> None:
        """Stop wanting notifications: aiocoap forgets the token, and the next
        notification is answered with a Reset, which ends the server's side.

        While the registration's response is pending the cancellation waits for
        it: aiocoap reports a failed registration to the observation as well, and
        raises (in its own task) if that observation was cancelled already.
        """
        response = self._request.response
        if response.done():
            _cancel(self._request.observation)
        else:
            observation = self._request.observation
            response.add_done_callback(lambda _: _cancel(observation))


def _cancel(observation: Any) -> None:
    if observation is not None and not observation.cancelled:
        observation.cancel()
