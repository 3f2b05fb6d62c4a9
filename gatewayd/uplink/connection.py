"""One MQTT connection: paho-mqtt's protocol engine driven by the running asyncio loop.

paho-mqtt does the MQTT 3.1.1/5 framing, TLS and WebSocket; this adapter only
moves events: the socket's readiness goes to paho (``add_reader`` /
``add_writer``), paho's callbacks resolve asyncio futures. Each connect uses a
fresh :class:`MqttConnection`; after it is closed it is discarded.

- :meth:`MqttConnection.connect` runs paho's blocking socket/TLS/WebSocket
  set-up in a worker thread (bounded by ``connect_timeout``), then awaits the
  CONNACK. Cancelling it is safe: a connection that completes after the
  caller gave up is closed at once, never left behind.
- :meth:`MqttConnection.publish` awaits the PUBACK of a QoS-1 message and
  raises if the broker refuses it (an MQTT 5 reason code >= 0x80) or the
  connection drops first.
- Every failure is an UplinkError with a one-line reason (the TLS alert, the
  CONNACK reason, "connection refused" …); nothing is logged here above DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.errors import UplinkError

log = logging.getLogger(__name__)

PROTOCOLS: Final = {"3.1.1": paho.MQTTv311, "5": paho.MQTTv5}
_OPENING_STEPS = 3  # name resolution, TCP + TLS, WebSocket: the bound of opening a connection
_TIMER_PERIOD = 1.0  # paho's keepalive bookkeeping (PINGREQ, dead-peer check) wants ~1 s
_SSL_NOISE = re.compile(r"^\[SSL: [A-Z0-9_]+\] | \(_ssl\.c:\d+\)$")

MessageHook = Callable[[str, bytes, bool], None]  # topic, payload, retain flag


@dataclass(frozen=True)
class ConnectionParams:
    """Everything one connect needs; built by the uplink from its config."""

    uplink: str
    host: str
    port: int
    client_id: str
    protocol: str  # "3.1.1" | "5"
    websocket_path: str | None  # None = plain TCP
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    keepalive: float
    connect_timeout: float
    will_topic: str
    will_payload: bytes
    max_inflight: int

    def __repr__(self) -> str:  # the password never shows
        return (f"ConnectionParams(uplink={self.uplink!r}, host={self.host!r}, "
                f"port={self.port}, client_id={self.client_id!r})")


def _tidy(text: str) -> str:
    """'[SSL: X] tlsv1 alert unknown ca (_ssl.c:2580)' -> 'tlsv1 alert unknown ca'."""
    return _SSL_NOISE.sub("", text).strip()


def connect_failure(err: BaseException, host: str, port: int, timeout: float) -> str:
    """A one-line reason for an exception raised while opening the connection."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {err.verify_message or _tidy(str(err))}"
    if isinstance(err, ssl.SSLError):
        return f"TLS: {_tidy(err.reason or str(err))}"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused by {host}:{port}"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f"no answer from {host}:{port} within {timeout:g}s"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve {host}: {err.strerror}"
    if isinstance(err, paho.WebsocketConnectionError):
        return f"WebSocket handshake with {host}:{port} failed: {err}"
    if isinstance(err, OSError):
        return f"cannot connect to {host}:{port}: {err.strerror or err}"
    return f"cannot connect to {host}:{port}: {type(err).__name__}: {err}"


class MqttConnection:
    """One connection to one broker. Use once: connect, publish, close."""

    def __init__(self, params: ConnectionParams, *, on_message: MessageHook | None = None) -> None:
        self.params = params
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._on_message_hook = on_message
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        self._close_reason = ""
        self._clean_close = False
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subscribing: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._sock: Any = None
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self._abandoned = False
        self._socket_error = ""
        self._paho = self._make_client()

    # ------------------------------------------------------------ set-up

    def _make_client(self) -> paho.Client:
        p = self.params
        v5 = p.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=p.client_id,
            clean_session=None if v5 else True,
            protocol=PROTOCOLS[p.protocol],
            transport="websockets" if p.websocket_path is not None else "tcp",
            reconnect_on_failure=False,
        )
        client.connect_timeout = p.connect_timeout
        client.max_inflight_messages_set(p.max_inflight)
        client.max_queued_messages_set(p.max_inflight * 2)
        client.will_set(p.will_topic, p.will_payload, qos=1, retain=True)
        if p.username is not None:
            client.username_pw_set(p.username, p.password)
        if p.tls is not None:
            client.tls_set_context(p.tls)
        if p.websocket_path is not None:
            client.ws_set_options(path=p.websocket_path)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_log = self._on_log
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    def _blocking_connect(self) -> None:
        p = self.params
        if p.protocol == "5":
            self._paho.connect(p.host, p.port, keepalive=round(p.keepalive),
                               clean_start=True)
        else:
            self._paho.connect(p.host, p.port, keepalive=round(p.keepalive))

    async def connect(self) -> None:
        """Open the connection and wait for a positive CONNACK.

        Raises UplinkError with the reason: refused, unreachable, TLS failure,
        broker refusal (bad credentials, not authorised), or no CONNACK within
        ``connect_timeout``.
        """
        p = self.params
        limit = _OPENING_STEPS * p.connect_timeout
        opening = self._loop.run_in_executor(None, self._blocking_connect)
        try:
            # paho bounds each step (TCP, TLS, WebSocket) by connect_timeout; name
            # resolution is not bounded there, hence the overall limit.
            async with asyncio.timeout(limit):
                await asyncio.shield(opening)
        except asyncio.CancelledError:
            self._abandon(opening)
            raise
        except Exception as err:  # every cause becomes one UplinkError
            if not opening.done():  # the overall limit, not paho, gave up
                self._abandon(opening)
                raise UplinkError(f"no answer from {p.host}:{p.port} within {limit:g}s",
                                  uplink=p.uplink) from None
            self.abort()
            raise UplinkError(connect_failure(err, p.host, p.port, p.connect_timeout),
                              uplink=p.uplink) from err
        try:
            async with asyncio.timeout(p.connect_timeout):
                await asyncio.shield(self._connack)
        except TimeoutError:
            self.abort()
            raise UplinkError(f"no CONNACK from {p.host}:{p.port} within "
                              f"{p.connect_timeout:g}s", uplink=p.uplink) from None
        except BaseException:
            self.abort()
            raise

    def _abandon(self, opening: asyncio.Future[None]) -> None:
        """The caller gave up while the connect thread runs: it cannot be interrupted,
        so whatever it opens is closed as soon as it returns."""
        self._abandoned = True

        def close(done: asyncio.Future[None]) -> None:
            if not done.cancelled():
                done.exception()  # consumed: the caller no longer cares why
            self.abort()

        opening.add_done_callback(close)

    # ------------------------------------------------------------ use

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (bound it with
        ``asyncio.timeout``).

        Raises UplinkError if the connection is or gets closed or the broker
        refuses the message.
        """
        uplink = self.params.uplink
        if self._closed.is_set():
            raise UplinkError(f"not connected: {self._close_reason}", uplink=uplink)
        info = self._paho.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise UplinkError(f"publish to {topic} failed: {paho.error_string(info.rc)}",
                              uplink=uplink)
        acked: asyncio.Future[None] = self._loop.create_future()
        self._pending[info.mid] = acked
        try:
            await acked
        finally:
            self._pending.pop(info.mid, None)

    async def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe at QoS 1 and wait for the SUBACK (bound it with ``asyncio.timeout``).

        Returns the granted QoS as the broker's reason code; raises UplinkError if
        the connection is or gets closed, or the broker refuses the subscription
        (``0x80`` and MQTT 5 failure codes). Messages go to the ``on_message`` hook.
        """
        uplink = self.params.uplink
        if self._closed.is_set():
            raise UplinkError(f"not connected: {self._close_reason}", uplink=uplink)
        rc, mid = self._paho.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise UplinkError(f"subscribe to {topic} failed: {paho.error_string(rc)}",
                              uplink=uplink)
        granted: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subscribing[mid] = granted
        try:
            codes = await granted
        finally:
            self._subscribing.pop(mid, None)
        if not codes or codes[0].is_failure:
            shown = codes[0] if codes else "no reason code"
            raise UplinkError(f"broker refused the subscription to {topic}: {shown}",
                              uplink=uplink)
        return codes[0]

    async def wait_closed(self) -> None:
        """Return when the connection is closed; raises UplinkError with the reason
        unless it was closed by :meth:`disconnect`."""
        await self._closed.wait()
        if not self._clean_close:
            raise UplinkError(self._close_reason, uplink=self.params.uplink)

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the last will) and wait until the
        connection is closed (bound it with ``asyncio.timeout``; :meth:`abort`
        after a timeout)."""
        if self._closed.is_set():
            return
        self._clean_close = True
        if self._paho.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await self._closed.wait()
        self.abort()

    def abort(self) -> None:
        """Close the socket now, without DISCONNECT (the broker publishes the will)."""
        self._abandoned = True
        if self._fd >= 0:
            self._detach()
            try:
                self._sock.close()
            except OSError:
                pass  # closing a broken socket: nothing left to release
        self._set_closed("connection closed by the gateway")
        # paho still holds the (closed) socket and closes it again when collected:
        # that must not call back into a loop that may be gone by then.
        client = self._paho
        client.on_socket_open = client.on_socket_close = None
        client.on_socket_register_write = client.on_socket_unregister_write = None
        client.on_connect = client.on_disconnect = client.on_publish = None
        client.on_message = client.on_log = client.on_subscribe = None

    # ------------------------------------------------------------ paho callbacks

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_log(self, _client: paho.Client, _userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR and "on socket" in buf:
            # "failed to receive on socket: [SSL: …] tlsv1 alert unknown ca (_ssl.c:…)"
            self._socket_error = _tidy(buf.split(": ", 1)[-1])
        log.debug("uplink %s: paho: %s", self.params.uplink, buf)

    def _on_connect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                    reason: ReasonCode, _props: Any = None) -> None:
        self._in_loop(self._connected, reason)

    def _connected(self, reason: ReasonCode) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(UplinkError(
                f"broker refused the connection: {reason}", uplink=self.params.uplink))
        else:
            self._connack.set_result(None)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                       reason: ReasonCode, _props: Any = None) -> None:
        self._in_loop(self._disconnected, reason)

    def _disconnected(self, reason: ReasonCode) -> None:
        if self._clean_close:
            text = "disconnected"
        elif self._socket_error:
            text = f"connection lost: {self._socket_error}"
        elif str(reason) in ("Unspecified error", "Success", "Normal disconnection"):
            text = "connection closed by the broker"
        else:
            text = f"connection lost: {reason}"
        if not self._connack.done():
            text = text.replace("connection lost", "connection closed before CONNACK")
            if text == "connection closed by the broker":
                text = "connection closed by the broker before CONNACK"
        self._set_closed(text)

    def _set_closed(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        error = UplinkError(reason, uplink=self.params.uplink)
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved here if nobody waits any more
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        for sub in self._subscribing.values():
            if not sub.done():
                sub.set_exception(error)

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, reason: ReasonCode,
                    _props: Any) -> None:
        self._in_loop(self._published, mid, reason)

    def _published(self, mid: int, reason: ReasonCode) -> None:
        fut = self._pending.get(mid)
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(UplinkError(f"broker refused the message: {reason}",
                                          uplink=self.params.uplink))
        else:
            fut.set_result(None)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int,
                      codes: list[ReasonCode], _props: Any) -> None:
        self._in_loop(self._subscribed, mid, codes)

    def _subscribed(self, mid: int, codes: list[ReasonCode]) -> None:
        fut = self._subscribing.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(list(codes))

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message_hook is not None:
            self._in_loop(self._on_message_hook, msg.topic, bytes(msg.payload), bool(msg.retain))

    # ------------------------------------------------------------ socket plumbing

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._attach, sock)

    def _attach(self, sock: Any) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        if self._abandoned:
            self.abort()
            return
        self._loop.add_reader(self._fd, self._readable)
        self._timer = self._loop.call_later(_TIMER_PERIOD, self._tick)

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        self._in_loop(self._detach)

    def _detach(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_socket_register_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        self._in_loop(self._want_write)

    def _want_write(self) -> None:
        if self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _on_socket_unregister_write(self, _client: paho.Client, _userdata: Any,
                                    _sock: Any) -> None:
        self._in_loop(self._no_write)

    def _no_write(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            while self._paho.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                # TLS may hold decrypted records the socket no longer signals.
                pending = getattr(self._sock, "pending", None)
                if self._fd < 0 or pending is None or pending() <= 0:
                    break
        except Exception as err:  # noqa: BLE001 - paho raised mid-read: the link is unusable
            self._fail(err)

    def _writable(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as err:  # noqa: BLE001 - paho raised mid-write: the link is unusable
            self._fail(err)

    def _fail(self, err: Exception) -> None:
        self._set_closed(f"connection lost: {type(err).__name__}: {_tidy(str(err))}")
        self.abort()

    def _tick(self) -> None:
        self._timer = None
        if self._paho.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS and self._fd >= 0:
            self._timer = self._loop.call_later(_TIMER_PERIOD, self._tick)
