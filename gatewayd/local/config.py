"""Validated configuration of local ingress: ``[local]``, ``[local.mqtt]``, ``[local.coap]``.

Local ingress is off unless configured: the MQTT broker runs when a
``[local.mqtt]`` table exists (and ``enabled`` is not false), the CoAP server
when a ``[local.coap]`` table does. Every listener binds where the config
says, loopback by default. Defaults live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.section import (
    Section,
    boolean,
    duration,
    integer,
    nonempty_string,
    size,
    string_list,
)
from gatewayd.config.units import parse_host_port

DEFAULT_CLIENTS_FILE = "clients.toml"  # beside the main config file
DEFAULT_MQTT_LISTEN = ("127.0.0.1:1883",)
DEFAULT_COAP_LISTEN = ("127.0.0.1:5683",)
TELEMETRY_PREFIX = "gatewayd/telemetry"


@dataclass(frozen=True)
class MqttListenConfig:
    """The embedded MQTT broker (amqtt)."""

    enabled: bool
    listen: tuple[str, ...]  # plain MQTT over TCP
    tls_listen: tuple[str, ...]  # MQTT over TLS
    ws_listen: tuple[str, ...]  # MQTT over WebSocket
    wss_listen: tuple[str, ...]  # MQTT over WebSocket with TLS
    tls_cert_file: Path | None
    tls_key_file: Path | None
    max_connections: int
    publish_telemetry: bool  # fan readings out on gatewayd/telemetry/{device}/{point}
    telemetry_queue: int  # readings waiting for the fan-out; oldest dropped beyond


@dataclass(frozen=True)
class CoapListenConfig:
    """The CoAP server (aiocoap, UDP)."""

    enabled: bool
    listen: tuple[str, ...]


@dataclass(frozen=True)
class LocalConfig:
    """Everything local ingress needs; ``mqtt``/``coap`` are None when not configured."""

    clients_file: Path
    token_max_age: float  # a password token older than this (by iat) is refused
    clock_skew: float  # tolerance for iat/exp and signed-message timestamps
    signed_lifespan: float  # a signed message older than this is stale
    max_payload: int  # bytes; larger messages are refused (too_large)
    max_records: int  # readings per message
    ack_delay: float  # longest wait before forcing the commit an acknowledgement waits for
    mqtt: MqttListenConfig | None
    coap: CoapListenConfig | None

    @property
    def enabled(self) -> bool:
        return bool((self.mqtt and self.mqtt.enabled) or (self.coap and self.coap.enabled))


def addresses(value: object) -> tuple[str, ...]:
    """A list of distinct ``HOST:PORT`` strings."""
    items = string_list(value)
    for item in items:
        parse_host_port(item)
    if len(set(items)) != len(items):
        raise ValueError("expected distinct addresses, got a duplicate")
    return items


def _listen(s: Section, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return s.get(key, addresses, default)


def _parse_mqtt(s: Section) -> MqttListenConfig:
    enabled = s.get("enabled", boolean, True)
    listen = _listen(s, "listen", DEFAULT_MQTT_LISTEN)
    tls_listen = _listen(s, "tls_listen", ())
    ws_listen = _listen(s, "ws_listen", ())
    wss_listen = _listen(s, "wss_listen", ())
    cert = s.get("tls_cert_file", nonempty_string, None)
    key = s.get("tls_key_file", nonempty_string, None)
    if (tls_listen or wss_listen) and not (cert and key):
        s.error("tls_cert_file" if not cert else "tls_key_file",
                "missing required key (tls_listen and wss_listen need tls_cert_file and "
                "tls_key_file)")
    if not (listen or tls_listen or ws_listen or wss_listen):
        s.error("listen", "no listener configured; expected at least one address in listen, "
                "tls_listen, ws_listen or wss_listen (or enabled = false)")
    cfg = MqttListenConfig(
        enabled=enabled,
        listen=listen,
        tls_listen=tls_listen,
        ws_listen=ws_listen,
        wss_listen=wss_listen,
        tls_cert_file=Path(cert) if cert else None,
        tls_key_file=Path(key) if key else None,
        max_connections=s.get("max_connections", integer(1, 100_000), 100),
        publish_telemetry=s.get("publish_telemetry", boolean, True),
        telemetry_queue=s.get("telemetry_queue", integer(10, 1_000_000), 10_000),
    )
    s.done()
    return cfg


def _parse_coap(s: Section) -> CoapListenConfig:
    cfg = CoapListenConfig(
        enabled=s.get("enabled", boolean, True),
        listen=_listen(s, "listen", DEFAULT_COAP_LISTEN),
    )
    if cfg.enabled and not cfg.listen:
        s.error("listen", "no listener configured; expected at least one address "
                "(or enabled = false)")
    s.done()
    return cfg


def parse_local(s: Section, *, config_dir: Path) -> LocalConfig:
    """Read the ``[local]`` table (records every problem on the section, never raises)."""
    mqtt = _parse_mqtt(s.table("mqtt")) if s.has("mqtt") else None
    if not s.has("mqtt"):
        s.mark_used("mqtt")
    coap = _parse_coap(s.table("coap")) if s.has("coap") else None
    if not s.has("coap"):
        s.mark_used("coap")
    cfg = LocalConfig(
        clients_file=Path(s.get("clients_file", nonempty_string,
                                str(config_dir / DEFAULT_CLIENTS_FILE))),
        token_max_age=s.get("token_max_age", duration(lo=1.0), 3600.0),
        clock_skew=s.get("clock_skew", duration(), 30.0),
        signed_lifespan=s.get("signed_lifespan", duration(lo=1.0), 60.0),
        max_payload=s.get("max_payload", size(lo=64), 64 * 1024),
        max_records=s.get("max_records", integer(1, 100_000), 1000),
        ack_delay=s.get("ack_delay", duration(), 0.02),
        mqtt=mqtt,
        coap=coap,
    )
    s.done()
    return cfg


def disabled() -> LocalConfig:
    """The configuration without any ``[local]`` table: nothing runs."""
    return LocalConfig(clients_file=Path("/etc/gatewayd") / DEFAULT_CLIENTS_FILE,
                       token_max_age=3600.0, clock_skew=30.0, signed_lifespan=60.0,
                       max_payload=64 * 1024, max_records=1000, ack_delay=0.02, mqtt=None,
                       coap=None)
