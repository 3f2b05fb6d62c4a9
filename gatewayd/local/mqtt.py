"""The embedded MQTT broker (amqtt) with our own auth and ACL plugins, and PUBACK
after commit.

How the acknowledgement waits for the commit (amqtt 0.12.1): the broker's
protocol handler runs every incoming PUBLISH in its own task; for QoS 1 it
does ``await session.delivered_message_queue.put(message)`` and only then
writes the PUBACK (``ProtocolHandler._handle_qos1_message_flow``); for QoS 2
the same ``put`` comes before the PUBCOMP; QoS 0 uses ``put_nowait``. Our auth
plugin, whose ``authenticate`` the broker awaits after reading CONNECT and
before it starts reading the client's packets, replaces that queue with an
:class:`IngestQueue`: its ``put`` checks the message and awaits
:meth:`LocalIngress.store` before handing the message on. So a PUBACK leaves
only after the readings are committed. When they cannot be stored, ``put``
closes the client's connection and never returns: no PUBACK is sent, and the
client publishes the message again when it reconnects.

A refused message (ACL, malformed, forged, stale …) is counted and dropped
but still acknowledged: MQTT 3.1.1 has no negative PUBACK, and dropping the
connection would make the client resend the same bad message forever.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from gatewayd import senml
from gatewayd.local import acl
from gatewayd.local.config import TELEMETRY_PREFIX, MqttListenConfig
from gatewayd.local.errors import AuthRefused, LocalIngressError, MessageRefused
from gatewayd.local.ingest import LocalIngress

log = logging.getLogger(__name__)

CLIENT_ATTRIBUTE = "gatewayd.client"
ABORT_GRACE = 10.0  # after closing a connection, how long put() waits to be cancelled
TELEMETRY_BATCH = 500
_GENERATED_ID = "amqtt/"  # amqtt's prefix for ids it assigns to clients that send none


class _OneLine(logging.Filter):
    """amqtt logs some expected faults with a traceback: keep the line, drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _quiet_amqtt() -> None:
    for name in ("amqtt", "transitions"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.ERROR)
        if not any(isinstance(f, _OneLine) for f in lg.filters):
            lg.addFilter(_OneLine())


def client_id_allowed(mqtt_client_id: str, client: str) -> bool:
    """The MQTT client identifier must be the client's own (``NAME`` or ``NAME/...``) or one
    the broker assigned: otherwise one client could take over another's session."""
    return (mqtt_client_id in ("", client) or mqtt_client_id.startswith(client + "/")
            or mqtt_client_id.startswith(_GENERATED_ID))


class GatewayBroker(Broker):
    """amqtt's broker, authenticating a CONNECT before it touches any session.

    amqtt 0.12.1 looks up (and, for a clean session, deletes) the session of the
    client id a CONNECT names, and takes over a connected one, before it asks the
    auth plugins; a refused client also stays in its session table. So an
    unauthenticated client could end another client's session. Here the auth
    plugins run first; a refused CONNECT gets CONNACK "not authorised" and never
    reaches the session table. The rest is amqtt's own code for the same step.
    """

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter,
                                         remote_address: str, remote_port: int
                                         ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        if not await self._authenticate(session, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("not authorised")
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for attr in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive",
                         "username", "password"):
                setattr(existing, attr, getattr(session, attr))
            existing.attributes.update(session.attributes)  # queue: set by authenticate
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session


class IngestQueue(asyncio.Queue[ApplicationMessage]):
    """The delivered-message queue of one client session, with the ingest in front.

    ``put`` (QoS 1 and 2) returns after the readings are committed; ``put_nowait``
    (QoS 0) queues them for the next commit. Only messages that pass every check
    go on to the broker's other subscribers.
    """

    def __init__(self, server: LocalMqttBroker, client: str, mqtt_client_id: str) -> None:
        super().__init__()
        self.server = server
        self.client = client
        self.mqtt_client_id = mqtt_client_id

    def _check(self, item: ApplicationMessage) -> Any:
        packet = item.publish_packet
        dup = bool(packet is not None and packet.dup_flag)
        return self.server.ingress.check("mqtt", self.client, item.topic, bytes(item.data),
                                         dup=dup)

    async def put(self, item: ApplicationMessage) -> None:
        try:
            checked = self._check(item)  # no await before the append: order is kept
        except MessageRefused:
            return  # counted; acknowledged (QoS 1) but neither stored nor relayed
        try:
            await self.server.ingress.store("mqtt", checked)
        except MessageRefused:
            await self.server.abort(self.mqtt_client_id)
            await asyncio.sleep(ABORT_GRACE)  # cancelled when the handler stops
            raise
        asyncio.Queue.put_nowait(self, item)

    def put_nowait(self, item: ApplicationMessage) -> None:
        try:
            checked = self._check(item)
        except MessageRefused:
            return
        self.server.ingress.submit("mqtt", checked)
        asyncio.Queue.put_nowait(self, item)


class GatewayAuthPlugin(BaseAuthPlugin):
    """username = client id, password = a password token signed with its key."""

    @dataclass
    class Config:
        server: Any = None  # the LocalMqttBroker

    async def authenticate(self, *, session: Session) -> bool | None:
        server: LocalMqttBroker = self.config.server
        ingress = server.ingress
        try:
            rec = ingress.authenticate("mqtt", session.username, session.password)
        except AuthRefused:
            return False
        client_id = session.client_id or ""
        if not client_id_allowed(client_id, rec.name):
            ingress.refuse("mqtt", AuthRefused(
                f"client {rec.name}: MQTT client id {client_id!r} is not {rec.name} or "
                f"{rec.name}/...", client=rec.name, reason="client_id_mismatch"))
            return False
        session.attributes[CLIENT_ATTRIBUTE] = rec.name
        queue = IngestQueue(server, rec.name, client_id)
        old = session.delivered_message_queue
        while not old.empty():  # a persistent session's undelivered messages
            asyncio.Queue.put_nowait(queue, old.get_nowait())
        session.delivered_message_queue = queue
        return True


class GatewayAclPlugin(BaseTopicPlugin):
    """Per-client publish/subscribe filters from the clients file (reloaded live)."""

    @dataclass
    class Config:
        server: Any = None

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        server: LocalMqttBroker = self.config.server
        name = session.attributes.get(CLIENT_ATTRIBUTE) if session is not None else None
        rec = server.ingress.client(name)
        if rec is None or topic is None:
            return False
        if action == Action.PUBLISH:
            return acl.may_publish(topic, rec.publish)  # counted by the ingest already
        if action == Action.SUBSCRIBE:
            if acl.may_subscribe(topic, rec.subscribe):
                return True
            server.ingress.refuse("mqtt", MessageRefused(
                f"client {rec.name} may not subscribe to {topic!r}", client=rec.name,
                reason="acl_subscribe"))
            return False
        return acl.may_receive(topic, rec.subscribe)


def _tls_files(cfg: MqttListenConfig) -> dict[str, Any]:
    return {"ssl": True, "certfile": cfg.tls_cert_file, "keyfile": cfg.tls_key_file}


class LocalMqttBroker:
    """The ``local-mqtt`` component: runs the broker and the telemetry fan-out."""

    name = "local-mqtt"

    def __init__(self, cfg: MqttListenConfig, ingress: LocalIngress) -> None:
        self.cfg = cfg
        self.ingress = ingress
        self.broker: GatewayBroker | None = None

    def listeners(self) -> dict[str, tuple[str, str, bool]]:
        """listener name -> (type, bind, tls)."""
        out: dict[str, tuple[str, str, bool]] = {}
        groups = (("mqtt", "tcp", False, self.cfg.listen),
                  ("mqtts", "tcp", True, self.cfg.tls_listen),
                  ("ws", "ws", False, self.cfg.ws_listen),
                  ("wss", "ws", True, self.cfg.wss_listen))
        for prefix, kind, tls, binds in groups:
            for i, bind in enumerate(binds):
                out[f"{prefix}-{i}"] = (kind, bind, tls)
        return out

    def broker_config(self) -> BrokerConfig:
        """Raises LocalIngressError for missing TLS files."""
        listeners: dict[str, ListenerConfig] = {
            # amqtt applies "default" to every other listener; ours binds nothing.
            "default": ListenerConfig(type=ListenerType.TCP, bind=None,
                                      max_connections=self.cfg.max_connections),
        }
        try:
            for name, (kind, bind, tls) in self.listeners().items():
                extra = _tls_files(self.cfg) if tls else {}
                listeners[name] = ListenerConfig(type=ListenerType(kind), bind=bind,
                                                 max_connections=self.cfg.max_connections,
                                                 **extra)
        except (FileNotFoundError, ValueError) as err:
            raise LocalIngressError(f"local mqtt: {err}", client=None, reason="config") from err
        binds = {name: bind for name, (_k, bind, _t) in self.listeners().items()}
        config = BrokerConfig(
            listeners=listeners,
            plugins={
                f"{__name__}.GatewayAuthPlugin": {"server": self},
                f"{__name__}.GatewayAclPlugin": {"server": self},
            },
        )
        for name, bind in binds.items():  # undo "default" overriding e.g. 0.0.0.0:1883
            config.listeners[name].bind = bind
        return config

    async def run(self) -> None:
        """Serve until cancelled. Raises LocalIngressError when the broker cannot start."""
        _quiet_amqtt()
        await self.ingress.ensure_loaded()
        config = self.broker_config()
        try:
            broker = GatewayBroker(config)
            await broker.start()
        except (BrokerError, AMQTTError, OSError, ssl.SSLError) as err:
            cause = err.__cause__ or err
            raise LocalIngressError(f"local mqtt: cannot start the broker: {cause}",
                                    client=None, reason="start") from err
        self.broker = broker
        log.info("local mqtt: listening on %s", ", ".join(
            f"{kind}{'+tls' if tls else ''}://{bind}"
            for kind, bind, tls in self.listeners().values()))
        try:
            await self._fan_out(broker)
        finally:
            self.broker = None
            await asyncio.shield(self._shutdown(broker))

    async def _shutdown(self, broker: Broker) -> None:
        try:
            await broker.shutdown()
        except (AMQTTError, OSError) as err:
            log.warning("local mqtt: shutdown: %s", err)

    async def _fan_out(self, broker: Broker) -> None:
        """Publish readings on gatewayd/telemetry/{device}/{point} while anyone listens."""
        tap = self.ingress.tap
        while True:
            readings = await tap.take(TELEMETRY_BATCH)
            if not self._telemetry_wanted(broker):
                continue
            for r in readings:
                data = senml.encode([r], gateway_id=self.ingress.gateway_id)
                await broker.internal_message_broadcast(
                    f"{TELEMETRY_PREFIX}/{r.device}/{r.point}", data, None)

    @staticmethod
    def _telemetry_wanted(broker: Broker) -> bool:
        return any(subs and f.startswith(("#", "+", "gatewayd/"))
                   for f, subs in broker.subscriptions.items())

    async def abort(self, mqtt_client_id: str) -> None:
        """Close one client's connection (its unacknowledged messages are resent later)."""
        broker = self.broker
        if broker is None:
            return
        handler = broker.sessions.get(mqtt_client_id, (None, None))[1]
        if handler is not None:
            await handler.handle_connection_closed()

    async def disconnect_clients(self, names: list[str]) -> None:
        """End the connections of clients removed from (or changed in) the clients file."""
        broker = self.broker
        if broker is None or not names:
            return
        wanted = set(names)
        for session, handler in list(broker.sessions.values()):
            if session.attributes.get(CLIENT_ATTRIBUTE) in wanted and handler is not None \
                    and session.transitions.state == "connected":
                log.info("local mqtt: disconnecting %s (clients file changed)",
                         session.attributes.get(CLIENT_ATTRIBUTE))
                await handler.handle_connection_closed()

    def connected(self) -> int:
        broker = self.broker
        if broker is None:
            return 0
        return sum(1 for s, _h in broker.sessions.values()
                   if s.transitions.state == "connected")

    def health(self) -> dict[str, Any]:
        return {
            "listening": [f"{kind}{'+tls' if tls else ''}://{bind}"
                          for kind, bind, tls in self.listeners().values()]
            if self.broker is not None else [],
            "connected": self.connected(),
            **self.ingress.health("mqtt"),
        }
