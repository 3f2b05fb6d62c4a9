"""Local ingress, transport-independent: who the clients are, what they may send,
and storing what they send before it is acknowledged.

:class:`LocalIngress` is built once by the daemon. The MQTT broker and the CoAP
server call :meth:`LocalIngress.authenticate` for every connection or request,
:meth:`LocalIngress.check` for every message (ACL, size, signature, payload:
pure, no I/O) and :meth:`LocalIngress.store`, which returns only once a
commit holding the readings succeeded: the transport acknowledges after it
returns and never when it raises.

:meth:`store` waits for the buffer's commit; :class:`AckFlusher` (the
``local-ingest`` component) forces that commit at most ``ack_delay`` after
an acknowledgement starts waiting, so a publisher does not wait a whole
``buffer.commit_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewayd.buffer import Buffer
from gatewayd.driver import Sink
from gatewayd.errors import StorageError
from gatewayd.local import acl, payload, tokens
from gatewayd.local.clients import ClientRecord, load_clients
from gatewayd.local.config import LocalConfig
from gatewayd.local.errors import AuthRefused, ClientsFileError, MessageRefused
from gatewayd.reading import Reading

log = logging.getLogger(__name__)

STORE_TIMEOUT = 30.0  # an acknowledgement waits at most this long for its commit
LOG_REPEAT_INTERVAL = 60.0  # the same refusal of the same client is logged once per minute


@dataclass
class TransportCounters:
    """What one transport accepted and refused (shown in status and metrics)."""

    messages: int = 0  # messages stored (or relayed) and acknowledged
    readings: int = 0  # readings committed
    duplicates: int = 0  # retransmitted signed messages already stored
    relayed: int = 0  # messages outside devices/ passed on to subscribers only
    refused: Counter[str] = field(default_factory=Counter)
    refused_by_client: dict[str, Counter[str]] = field(default_factory=dict)

    def refuse(self, client: str | None, reason: str) -> None:
        self.refused[reason] += 1
        self.refused_by_client.setdefault(client or "-", Counter())[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "duplicates": self.duplicates,
            "relayed": self.relayed,
            "refused_total": sum(self.refused.values()),
            "refused": dict(sorted(self.refused.items())),
            "refused_by_client": {c: dict(sorted(r.items()))
                                  for c, r in sorted(self.refused_by_client.items())},
        }


@dataclass(frozen=True)
class Checked:
    """A message that passed every check, ready to store."""

    client: str
    topic: str
    readings: list[Reading]  # empty: not telemetry (relay only) or a duplicate
    telemetry: bool
    duplicate: bool = False
    signature: str | None = None  # held in the replay cache until stored


class TelemetryTap:
    """Readings waiting to be fanned out on ``gatewayd/telemetry/...``; bounded, the
    oldest dropped (and counted) beyond ``limit``. Off until a consumer enables it."""

    def __init__(self, limit: int = 10_000) -> None:
        self.enabled = False
        self.dropped = 0
        self._queue: deque[Reading] = deque()
        self._limit = limit
        self._ready = asyncio.Event()

    def configure(self, *, enabled: bool, limit: int) -> None:
        self.enabled = enabled
        self._limit = limit
        if not enabled:
            self._queue.clear()

    def offer(self, readings: Sequence[Reading]) -> None:
        if not self.enabled or not readings:
            return
        self._queue.extend(readings)
        excess = len(self._queue) - self._limit
        if excess > 0:
            for _ in range(excess):
                self._queue.popleft()
            self.dropped += excess
        self._ready.set()

    async def take(self, limit: int = 500) -> list[Reading]:
        """Wait for readings; return at most ``limit`` of them, oldest first."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        n = min(limit, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]


class TeeSink:
    """The sink of a polled device: the buffer, plus the telemetry fan-out."""

    def __init__(self, target: Sink, tap: TelemetryTap) -> None:
        self.target = target
        self.tap = tap

    def submit(self, readings: Sequence[Reading]) -> None:
        self.target.submit(readings)
        self.tap.offer(readings)


class RefusalLog:
    """Logs a refusal once per client, reason and minute; the counters count them all."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], float] = {}

    def log(self, transport: str, err: AuthRefused | MessageRefused) -> None:
        key = (transport, err.client or "-", err.reason)
        now = time.monotonic()
        if now - self._last.get(key, -LOG_REPEAT_INTERVAL) >= LOG_REPEAT_INTERVAL:
            self._last[key] = now
            log.warning("local %s: refused (%s): %s", transport, err.reason, err)
        if len(self._last) > 10_000:
            self._last.clear()


class LocalIngress:
    """The shared state of local ingress: clients, counters, replay cache, commit."""

    def __init__(self, config: LocalConfig, *, buffer: Buffer, gateway_id: str) -> None:
        self.config = config
        self.buffer = buffer
        self.gateway_id = gateway_id
        self.clients: dict[str, ClientRecord] = {}
        self.clients_loaded = False
        self.clients_error: str | None = None
        self.counters = {"mqtt": TransportCounters(), "coap": TransportCounters()}
        self.tap = TelemetryTap()
        self.replay = tokens.ReplayCache(lifespan=config.signed_lifespan,
                                         skew=config.clock_skew)
        self.refusals = RefusalLog()
        self._flush_wanted = asyncio.Event()
        self._load_lock = asyncio.Lock()
        self._configure_tap()

    # -- configuration and clients -------------------------------------------

    def _configure_tap(self) -> None:
        m = self.config.mqtt
        self.tap.configure(enabled=bool(m and m.enabled and m.publish_telemetry),
                           limit=m.telemetry_queue if m else 10_000)

    def reconfigure(self, config: LocalConfig, *, gateway_id: str) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.replay.horizon = config.signed_lifespan + config.clock_skew
        self._configure_tap()

    async def load_clients(self) -> list[str]:
        """(Re)read the clients file. Returns the clients removed or changed (whose
        connections should end). Raises ClientsFileError; the old set is kept then."""
        try:
            new = await asyncio.to_thread(load_clients, self.config.clients_file)
        except ClientsFileError as err:
            self.clients_error = str(err)
            raise
        old = self.clients
        gone = sorted(n for n, rec in old.items() if new.get(n) != rec)
        self.clients = new
        self.clients_loaded = True
        self.clients_error = None
        for name in gone:
            self.replay.forget_client(name)
        log.info("local: %d clients loaded from %s%s", len(new), self.config.clients_file,
                 f" ({len(gone)} removed or changed)" if gone else "")
        return gone

    async def ensure_loaded(self) -> None:
        """Read the clients file unless it was read already (each transport calls this
        at start). Raises ClientsFileError."""
        async with self._load_lock:
            if not self.clients_loaded:
                await self.load_clients()

    def client(self, name: str | None) -> ClientRecord | None:
        return self.clients.get(name) if name is not None else None

    # -- authentication ------------------------------------------------------

    def _policy(self) -> tokens.TokenPolicy:
        return tokens.TokenPolicy(max_age=self.config.token_max_age,
                                  clock_skew=self.config.clock_skew, audience=self.gateway_id)

    def authenticate(self, transport: str, username: str | None, password: str | None,
                     *, now: float | None = None) -> ClientRecord:
        """The client whose token ``password`` is. Counts and raises AuthRefused."""
        try:
            return self._authenticate(username, password, time.time() if now is None else now)
        except AuthRefused as err:
            self.counters[transport].refuse(err.client, err.reason)
            self.refusals.log(transport, err)
            raise

    def _authenticate(self, username: str | None, password: str | None,
                      now: float) -> ClientRecord:
        if not username or not password:
            raise AuthRefused("no client id or token given", client=username,
                              reason="no_credentials")
        rec = self.clients.get(username)
        if rec is None:
            raise AuthRefused(f"unknown client {username!r}", client=username,
                              reason="unknown_client")
        tokens.verify_token(password, client=rec.name, key=rec.key, policy=self._policy(),
                            now=now)
        return rec

    def refuse(self, transport: str, err: AuthRefused | MessageRefused) -> None:
        """Count (and log, rate-limited) a refusal decided by a transport."""
        self.counters[transport].refuse(err.client, err.reason)
        self.refusals.log(transport, err)

    # -- messages ------------------------------------------------------------

    def check(self, transport: str, client: str, topic: str, data: bytes, *, fmt: str = "json",
              dup: bool = False, now: float | None = None) -> Checked:
        """Every check a message passes before it is stored. Pure but for the replay
        cache (a signature is claimed here). Counts and raises MessageRefused."""
        try:
            return self._check(client, topic, data, fmt, dup, time.time() if now is None else now)
        except MessageRefused as err:
            if err.client is None:
                err.client = client
            self.refuse(transport, err)
            raise

    def _check(self, client: str, topic: str, data: bytes, fmt: str, dup: bool,
               now: float) -> Checked:
        rec = self.clients.get(client)
        if rec is None:
            raise MessageRefused(f"client {client} is no longer in the clients file",
                                 client=client, reason="unknown_client")
        if not acl.may_publish(topic, rec.publish):
            raise MessageRefused(f"client {client} may not publish to {topic!r}",
                                 client=client, reason="acl_publish")
        if len(data) > self.config.max_payload:
            raise MessageRefused(f"client {client}: {len(data)} bytes on {topic}; at most "
                                 f"{self.config.max_payload}", client=client, reason="too_large")
        where = payload.topic_point(topic)
        if where is not None and where[0] != client:
            raise MessageRefused(f"client {client} may only send its own readings, not "
                                 f"{where[0]}'s", client=client, reason="not_own_device")
        signed: tokens.SignedMessage | None = None
        if rec.signed:
            signed = tokens.verify_message(
                data, client=client, key=rec.key, topic=topic,
                lifespan=self.config.signed_lifespan, skew=self.config.clock_skew, now=now)
            if dup and self.replay.seen(client, signed.signature):
                return Checked(client, topic, [], where is not None, duplicate=True)
            data = signed.payload
        readings: list[Reading] = []
        if where is not None:
            readings = payload.decode(data, client=client, point=where[1], fmt=fmt,
                                      now_ns=int(now * 1e9), max_records=self.config.max_records)
        if signed is None:
            return Checked(client, topic, readings, where is not None)
        self.replay.claim(client, signed.signature, signed.iat, now)
        return Checked(client, topic, readings, where is not None, signature=signed.signature)

    async def store(self, transport: str, msg: Checked) -> None:
        """Commit the readings of ``msg``; return once they are committed.

        Raises MessageRefused (reason ``storage``) when the buffer dropped them
        or did not commit them within STORE_TIMEOUT: do not acknowledge then.
        """
        counters = self.counters[transport]
        if msg.duplicate:
            counters.duplicates += 1
            return
        if msg.readings:
            self._flush_wanted.set()
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await self.buffer.append(msg.readings)
            except (StorageError, TimeoutError) as err:
                if msg.signature is not None:
                    self.replay.release(msg.client, msg.signature)
                reason = err.reason if isinstance(err, StorageError) else "timeout"
                refused = MessageRefused(f"client {msg.client}: readings on {msg.topic} not "
                                         f"stored ({reason}); not acknowledged",
                                         client=msg.client, reason="storage")
                self.refuse(transport, refused)
                raise refused from err
            except BaseException:
                if msg.signature is not None:
                    self.replay.release(msg.client, msg.signature)
                raise
            counters.readings += len(msg.readings)
            self.tap.offer(msg.readings)
        else:
            counters.relayed += 1
        counters.messages += 1

    def submit(self, transport: str, msg: Checked) -> None:
        """Queue the readings of an unacknowledged (QoS 0) message: never blocks."""
        counters = self.counters[transport]
        if msg.duplicate:
            counters.duplicates += 1
            return
        if msg.readings:
            self.buffer.submit(msg.readings)
            counters.readings += len(msg.readings)
            self.tap.offer(msg.readings)
        else:
            counters.relayed += 1
        counters.messages += 1

    def device_sink(self, target: Sink) -> TeeSink:
        """The sink for a polled device: its readings also reach local subscribers."""
        return TeeSink(target, self.tap)

    # -- status --------------------------------------------------------------

    def health(self, transport: str) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "clients_file": str(self.config.clients_file),
            "clients_error": self.clients_error,
            **self.counters[transport].as_dict(),
        }

    async def run_flusher(self) -> None:
        """Force a commit at most ``ack_delay`` after a store started waiting."""
        while True:
            await self._flush_wanted.wait()
            if self.config.ack_delay > 0:
                await asyncio.sleep(self.config.ack_delay)
            self._flush_wanted.clear()
            try:
                await self.buffer.flush()
            except StorageError as err:  # the waiting stores fail or retry on their own
                log.debug("local: forced commit failed: %s", err)


class AckFlusher:
    """The ``local-ingest`` component: forces commits that acknowledgements wait for."""

    name = "local-ingest"

    def __init__(self, ingress: LocalIngress) -> None:
        self.ingress = ingress

    async def run(self) -> None:
        await self.ingress.run_flusher()

    def health(self) -> dict[str, Any]:
        return {"ack_delay_s": self.ingress.config.ack_delay,
                "telemetry_dropped": self.ingress.tap.dropped}

