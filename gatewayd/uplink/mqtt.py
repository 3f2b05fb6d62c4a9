"""The MQTT uplink: batches from the buffer, published QoS 1 to the central broker,
the buffer cursor advanced only on the broker's acknowledgement.

One :class:`MqttUplink` per ``[uplinks.NAME]``; each has its own cursor and its
own connection, so one uplink being down never slows another.

Life cycle of :meth:`MqttUplink.run` (never returns normally):

1. ``connecting``: credentials are built afresh (a new JWT each time), the
   connection opened (TLS always verified) with the last will
   ``{"status": "offline"}`` retained on ``{topic_prefix}/status``.
2. ``connected``: the retained ``online`` birth message is published, then
   batches are read from the acknowledged cursor on (clean session: after a
   reconnect everything not acknowledged is sent again — duplicates are
   possible, loss is not) with up to ``max_inflight`` messages awaiting PUBACK.
   With ``commands = true`` the uplink first subscribes to
   ``{topic_prefix}/commands/+`` and publishes command results as they come
   (see ``docs/commands.md``).
3. on any failure: the one-line reason goes to ``health()`` and the log (no
   traceback), then ``backoff`` for a random delay (see
   :class:`~gatewayd.uplink.pacing.Backoff`) and back to 1.
4. cancelled: the retained ``offline`` status is published, the connection
   closed with DISCONNECT, and the state is ``stopped``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

from gatewayd import senml
from gatewayd.changes import Changes
from gatewayd.config.schema import IdentityConfig
from gatewayd.errors import GatewayError, UplinkError
from gatewayd.uplink.batching import UplinkBuffer, next_batch
from gatewayd.uplink.config import UplinkConfig
from gatewayd.uplink.connection import ConnectionParams, MqttConnection
from gatewayd.uplink.credentials import credentials
from gatewayd.uplink.cursor import UplinkCursor
from gatewayd.uplink.pacing import Backoff, RateMeter, TokenBucket

# A backlog is read from the buffer this many rows at a time, whatever max_records is:
# one round trip to the database thread then serves many packs (with max_records = 1,
# a read per reading capped the uplink at a few hundred readings per second).
READ_AHEAD = 2000

log = logging.getLogger(__name__)

STATES: Final = ("connecting", "connected", "backoff", "stopped")
COMMAND_QUEUE: Final = 32  # commands waiting for the handler; more are dropped and counted
RESULT_QUEUE: Final = 64  # results waiting for a connection; the oldest is dropped beyond

# The daemon's command handler: (topic, payload) -> the result message to publish.
CommandHandler = Callable[[str, bytes], Awaitable[bytes]]
_STOP_TIMEOUT = 1.5  # at most this long each for the offline status and the DISCONNECT


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _leaf_errors(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaf_errors(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class MqttUplink:
    """One outbound MQTT uplink. See the module docstring for its life cycle."""

    def __init__(self, config: UplinkConfig, *, buffer: UplinkBuffer, gateway_id: str,
                 identity: IdentityConfig, version: str,
                 boot_time: float | None = None,
                 commands: CommandHandler | None = None) -> None:
        """``boot_time`` (Unix seconds) goes into the birth message; default: now.
        ``commands``: when given, the uplink subscribes to
        ``{topic_prefix}/commands/+`` after each connect, hands every command
        message to it (one at a time) and publishes what it returns to
        ``{topic_prefix}/commands/{name}/result``."""
        self.config = config
        self.name = config.name
        self._buffer = buffer
        self._gateway_id = gateway_id
        self._identity = identity
        self._version = version
        self._boot_time = time.time() if boot_time is None else boot_time
        # The URL as shown in logs and status: never with user info from the config.
        path = config.ws_path if config.scheme in ("ws", "wss") else ""
        self.where = f"{config.scheme}://{config.host}:{config.port}{path}"
        self._status_topic = f"{config.topic_prefix}/status"
        self._telemetry_topic = f"{config.topic_prefix}/telemetry"
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        # A PUBACK may wait behind max_inflight full messages on a slow link; a
        # dead link is found sooner by the MQTT keepalive.
        self._ack_timeout = max(60.0, 4 * config.keepalive)
        self._state = "stopped"
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._connect_attempts = 0
        self._connects = 0
        self._disconnects = 0
        self._published_batches = 0
        self._published_readings = 0
        self._acked_readings = 0
        self._acked_rate = RateMeter(10)  # readings acknowledged per second, last 10 s
        self._inflight = 0
        self._last_ack_at: float | None = None
        self._retry_at: float | None = None
        self._persisted = 0
        self._cursor: UplinkCursor | None = None
        self._ack_wanted = asyncio.Event()
        self._changes = Changes()
        self._commands = commands
        self._commands_prefix = f"{config.topic_prefix}/commands/"
        self._command_inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(COMMAND_QUEUE)
        self._results: deque[tuple[str, bytes]] = deque()
        self._results_ready = asyncio.Event()
        self._cmd = {"subscribed": False, "received": 0, "ignored": 0, "dropped": 0,
                     "results_published": 0, "results_dropped": 0}

    # ------------------------------------------------------------ status

    def health(self) -> dict[str, Any]:
        """The uplink's state and counters (JSON-serialisable)."""
        now = time.monotonic()
        retry = None
        if self._state == "backoff" and self._retry_at is not None:
            retry = round(max(0.0, self._retry_at - now), 3)
        return {
            "name": self.name,
            "url": self.where,
            "state": self._state,
            "connected": self._state == "connected",
            "last_error": self._last_error,
            "last_error_at": None if self._last_error_at is None else _iso(self._last_error_at),
            "connect_attempts": self._connect_attempts,
            "connects": self._connects,
            "disconnects": self._disconnects,
            "published_batches": self._published_batches,
            "published_readings": self._published_readings,
            "acked_readings": self._acked_readings,
            "acked_per_s": round(self._acked_rate.rate(now), 1),
            "inflight": self._inflight,
            "last_ack_age_s": None if self._last_ack_at is None
            else round(now - self._last_ack_at, 3),
            "next_retry_in_s": retry,
            "cursor": self._cursor_or_none(),
            "commands": None if self._commands is None else {
                **self._cmd, "queued": self._command_inbox.qsize(),
                "results_pending": len(self._results)},
        }

    def _cursor_or_none(self) -> int | None:
        try:
            return self._buffer.cursor(self.name)
        except GatewayError:  # the buffer does not (or no longer) serve this uplink
            return None

    async def watch(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait until ``health()`` satisfies ``predicate`` and return it (bound the
        wait with ``asyncio.timeout``). Health is re-checked on every state
        change, error, publish and acknowledgement."""
        return await self._changes.until(self.health, predicate)

    def _touch(self) -> None:
        self._changes.notify()

    # ------------------------------------------------------------ run

    async def run(self) -> NoReturn:
        """Connect, publish, reconnect with backoff — until cancelled.

        Raises only what is not an expected fault (a bug); expected faults
        (network, TLS, auth, files, buffer) are retried with backoff. With a
        command handler, commands are handled by a worker that outlives each
        connection, so that a connection lost midway does not cut a command short.
        """
        if self._commands is None:
            await self._sessions()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._command_worker(self._commands))
            await self._sessions()

    async def _sessions(self) -> NoReturn:
        try:
            while True:
                self._retry_at = None
                self._set_state("connecting")
                try:
                    await self._session()
                except GatewayError as err:
                    delay = self._backoff.next_delay()
                    self._retry_at = time.monotonic() + delay
                    self._note_error(err, delay)
                    self._set_state("backoff")
                    await asyncio.sleep(delay)
        finally:
            self._retry_at = None
            self._set_state("stopped")

    def _set_state(self, state: str) -> None:
        self._state = state
        self._touch()

    def _note_error(self, err: GatewayError, retry_in: float) -> None:
        self._last_error = str(err)
        self._last_error_at = time.time()
        log.warning("uplink %s: %s; retrying in %.1fs", self.name, err, retry_in)
        self._touch()

    async def _params(self) -> ConnectionParams:
        cfg = self.config
        creds = await asyncio.to_thread(credentials, cfg, gateway_id=self._gateway_id,
                                        identity=self._identity)
        will = json.dumps({"status": "offline", "gateway": self._gateway_id}).encode()
        return ConnectionParams(
            uplink=self.name, host=cfg.host, port=cfg.port, client_id=cfg.client_id,
            protocol=cfg.protocol,
            websocket_path=cfg.ws_path if cfg.scheme in ("ws", "wss") else None,
            tls=creds.tls, username=creds.username, password=creds.password,
            keepalive=cfg.keepalive, connect_timeout=cfg.connect_timeout,
            will_topic=self._status_topic, will_payload=will,
            max_inflight=cfg.max_inflight + 3,  # + the status messages and a result
        )

    async def _session(self) -> NoReturn:
        """One connection, from connect to loss (raises UplinkError) or cancellation."""
        self._connect_attempts += 1
        conn = MqttConnection(await self._params(),
                              on_message=None if self._commands is None else self._on_message)
        await conn.connect()
        self._connects += 1
        self._set_state("connected")
        started = time.monotonic()
        acked_before = self._acked_readings
        log.info("uplink %s: connected to %s (MQTT %s)", self.name, self.where,
                 self.config.protocol)
        try:
            await self._publish_acked(conn, self._status_topic, await self._birth(),
                                      retain=True, limit=self._ack_timeout)
            if self._commands is not None:
                await self._subscribe(conn)
            await self._stream(conn)
        except asyncio.CancelledError:
            await self._stop(conn)
            raise
        finally:
            conn.abort()
            self._cmd["subscribed"] = False
            if self._state == "connected":
                self._disconnects += 1
                self._set_state("backoff")
            try:
                await self._persist_ack()
            except GatewayError as err:  # the next session re-sends from the older cursor
                log.warning("uplink %s: cursor not saved: %s", self.name, err)
            if (self._acked_readings > acked_before
                    or time.monotonic() - started >= self.config.backoff_max):
                self._backoff.reset()

    async def _birth(self) -> bytes:
        return json.dumps({
            "status": "online", "gateway": self._gateway_id, "version": self._version,
            "boot_time": _iso(self._boot_time), "backlog": await self._backlog_rows(),
        }).encode()

    async def _backlog_rows(self) -> int | None:
        stats = await self._buffer.stats()
        uplinks = stats.get("uplinks")
        entry = uplinks.get(self.name) if isinstance(uplinks, dict) else None
        rows = entry.get("backlog_rows") if isinstance(entry, dict) else None
        return rows if isinstance(rows, int) else None

    async def _stop(self, conn: MqttConnection) -> None:
        """Clean stop: retained offline status, then DISCONNECT (no will)."""
        offline = json.dumps({"status": "offline", "gateway": self._gateway_id}).encode()
        try:
            await self._publish_acked(conn, self._status_topic, offline, retain=True,
                                      limit=_STOP_TIMEOUT)
        except UplinkError as err:
            log.warning("uplink %s: offline status not acknowledged: %s", self.name, err)
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await conn.disconnect()
        except TimeoutError:
            log.warning("uplink %s: no clean disconnect within %gs", self.name, _STOP_TIMEOUT)
        self._set_state("stopped")
        log.info("uplink %s: disconnected", self.name)

    async def _stream(self, conn: MqttConnection) -> NoReturn:
        """Publish batches until the connection fails; raises UplinkError (or the
        buffer's StorageError) with the reason."""
        self._cursor = UplinkCursor(self._buffer.cursor(self.name))
        self._persisted = self._cursor.acked
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(conn.wait_closed())
                tg.create_task(self._pump(conn, tg))
                tg.create_task(self._acker())
                if self._commands is not None:
                    tg.create_task(self._result_pump(conn))
        except BaseExceptionGroup as group:
            leaves = _leaf_errors(group)
            expected = [e for e in leaves if isinstance(e, GatewayError)]
            if len(expected) < len(leaves):
                raise
            # The first error says why; the others follow from it.
            raise expected[0] from None
        # wait_closed() returned: the connection was closed on purpose.
        raise UplinkError("connection closed", uplink=self.name)

    async def _pump(self, conn: MqttConnection, tg: asyncio.TaskGroup) -> NoReturn:
        cfg = self.config
        assert self._cursor is not None
        cursor = self._cursor
        slots = asyncio.Semaphore(cfg.max_inflight)
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(cfg.drain_rate, max(cfg.max_records, cfg.drain_rate),
                             now=loop.time())
        position = cursor.acked
        # A whole number of batches per read, so that only the last pack of a backlog
        # may be short.
        read_ahead = cfg.max_records * max(1, READ_AHEAD // cfg.max_records)
        while True:
            batch = await next_batch(self._buffer, self.name, after=position,
                                     max_records=cfg.max_records, max_delay=cfg.max_delay,
                                     read_ahead=read_ahead)
            packs = [pack for start in range(0, len(batch.readings), cfg.max_records)
                     for pack in senml.encode_packs(
                         batch.readings[start:start + cfg.max_records],
                         gateway_id=self._gateway_id, fmt=cfg.format, max_bytes=cfg.max_bytes)]
            token = cursor.add(batch.upto, len(packs))
            if not packs:
                self._ack_wanted.set()
            for pack in packs:
                delay = bucket.take(pack.count, now=loop.time())
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                self._inflight += 1
                self._published_batches += 1
                self._published_readings += pack.count
                self._touch()
                tg.create_task(self._publish(conn, pack, token, slots))
            position = batch.upto

    async def _publish(self, conn: MqttConnection, pack: senml.Pack, token: int,
                       slots: asyncio.Semaphore) -> None:
        try:
            await self._publish_acked(conn, self._telemetry_topic, pack.payload,
                                      limit=self._ack_timeout)
        finally:
            self._inflight -= 1
            slots.release()
        self._acked_readings += pack.count
        self._last_ack_at = time.monotonic()
        self._acked_rate.add(pack.count, self._last_ack_at)
        self._touch()
        assert self._cursor is not None
        if self._cursor.ack(token):
            self._ack_wanted.set()

    async def _publish_acked(self, conn: MqttConnection, topic: str, payload: bytes, *,
                             retain: bool = False, limit: float) -> None:
        """Publish QoS 1; raises UplinkError unless the PUBACK comes within ``limit`` s."""
        try:
            async with asyncio.timeout(limit):
                await conn.publish(topic, payload, retain=retain)
        except TimeoutError:
            raise UplinkError(f"no PUBACK for a message to {topic} within {limit:g}s",
                              uplink=self.name) from None

    async def _acker(self) -> NoReturn:
        """Persist the acknowledged position, coalescing PUBACKs that come together."""
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._persist_ack()

    async def _persist_ack(self) -> None:
        if self._cursor is not None and self._cursor.acked > self._persisted:
            upto = self._cursor.acked
            await self._buffer.ack(self.name, upto)
            self._persisted = upto
            self._touch()

    # ------------------------------------------------------------ commands downlink

    async def _subscribe(self, conn: MqttConnection) -> None:
        """Subscribe to the command topics. A refusal (the broker's ACL) is logged and
        shown in health; telemetry goes on. No SUBACK in time is a session error."""
        topic = f"{self._commands_prefix}+"
        self._cmd["subscribed"] = False
        try:
            async with asyncio.timeout(self._ack_timeout):
                await conn.subscribe(topic)
        except TimeoutError:
            raise UplinkError(f"no SUBACK for {topic} within {self._ack_timeout:g}s",
                              uplink=self.name) from None
        except UplinkError as err:
            if conn.is_closed:
                raise
            log.warning("uplink %s: %s; commands are not received", self.name, err)
            self._touch()
            return
        self._cmd["subscribed"] = True
        log.info("uplink %s: subscribed to %s", self.name, topic)
        self._touch()

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        """A message on a command topic (called on the loop's thread): queued for the
        worker. Retained messages (stale by definition) and deeper topics are ignored;
        beyond COMMAND_QUEUE waiting commands, new ones are dropped and counted."""
        name = topic[len(self._commands_prefix):] if topic.startswith(
            self._commands_prefix) else ""
        if retain or not name or "/" in name:
            self._cmd["ignored"] += 1
            log.warning("uplink %s: ignored %s message on %s", self.name,
                        "a retained" if retain else "a", topic)
            return
        try:
            self._command_inbox.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._cmd["dropped"] += 1
            log.warning("uplink %s: command on %s dropped: %d commands already waiting",
                        self.name, topic, COMMAND_QUEUE)
            return
        self._cmd["received"] += 1
        self._touch()

    async def _command_worker(self, handler: CommandHandler) -> NoReturn:
        """Hand queued commands to the handler, one at a time; queue their results."""
        while True:
            topic, payload = await self._command_inbox.get()
            result = await handler(topic, payload)
            if len(self._results) >= RESULT_QUEUE:
                self._results.popleft()
                self._cmd["results_dropped"] += 1
                log.warning("uplink %s: oldest unpublished command result dropped", self.name)
            self._results.append((f"{topic}/result", result))
            self._results_ready.set()
            self._touch()

    async def _result_pump(self, conn: MqttConnection) -> NoReturn:
        """Publish queued results QoS 1, oldest first; a result leaves the queue only
        once acknowledged, so one not acknowledged goes out again after a reconnect."""
        while True:
            self._results_ready.clear()
            while self._results:
                topic, payload = self._results[0]
                await self._publish_acked(conn, topic, payload, limit=self._ack_timeout)
                if self._results and self._results[0] == (topic, payload):
                    self._results.popleft()
                self._cmd["results_published"] += 1
                self._touch()
            await self._results_ready.wait()
