"""Validated configuration of one ``[uplinks.NAME]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gatewayd.config.section import (
    Section,
    boolean,
    choice,
    duration,
    integer,
    nonempty_string,
    size,
    string,
    string_list,
)

SCHEMES = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
TLS_SCHEMES = {"mqtts", "wss"}


@dataclass(frozen=True)
class AuthConfig:
    """How the uplink authenticates to the central broker."""

    type: str  # none | password | mtls | jwt
    username: str | None = None
    password_file: Path | None = None
    cert_file: Path | None = None  # mtls: defaults to the gateway identity certificate
    key_file: Path | None = None  # mtls/jwt: defaults to the gateway identity key
    jwt_ttl: float = 3600.0
    jwt_audience: str | None = None


@dataclass(frozen=True)
class UplinkConfig:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    ws_path: str
    topic_prefix: str
    auth: AuthConfig
    select: tuple[str, ...]
    client_id: str
    protocol: str  # "3.1.1" | "5"
    format: str  # json | cbor
    ca_file: Path | None
    max_records: int
    max_bytes: int
    max_delay: float
    max_inflight: int
    keepalive: float
    connect_timeout: float
    backoff_initial: float
    backoff_max: float
    drain_rate: int  # readings per second; 0 = as fast as the broker acknowledges
    enabled: bool
    commands: bool = False  # subscribe to {topic_prefix}/commands/+ (signed commands)

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES


def parse_uplink(name: str, s: Section, *, gateway_id: str) -> UplinkConfig:
    url = s.get("url", nonempty_string)
    scheme, host, port, ws_path = "mqtts", "", 0, "/mqtt"
    parts = None
    if url:
        try:
            parts = urlsplit(url)
        except ValueError as err:  # e.g. a bracketed host that is not an IP address
            s.error("url", f"invalid URL {url!r}: {err}")
    if parts is not None:
        if parts.scheme not in SCHEMES:
            s.error("url", f"unknown scheme {parts.scheme!r} in {url!r}; "
                    f"expected one of {', '.join(SCHEMES)}")
        elif not parts.hostname:
            s.error("url", f"no host in {url!r}; expected e.g. mqtts://broker.example.net:8883")
        else:
            scheme, host = parts.scheme, parts.hostname
            try:
                port = parts.port or SCHEMES[scheme]
            except ValueError:
                s.error("url", f"invalid port in {url!r}")
            if parts.path and scheme in ("ws", "wss"):
                ws_path = parts.path
    topic_prefix = s.get("topic_prefix", nonempty_string, f"gateways/{gateway_id}")
    if topic_prefix and (topic_prefix.endswith("/") or any(c in topic_prefix for c in "#+")):
        s.error("topic_prefix", f"invalid topic prefix {topic_prefix!r}; "
                "expected topic levels without wildcards or a trailing '/'")

    a = s.table("auth", required=True)
    auth_type = a.get("type", choice("none", "password", "mtls", "jwt"))
    username = a.get("username", string, None) if auth_type in ("password", "jwt") else None
    password_file = None
    if auth_type == "password":
        password = a.get("password_file", nonempty_string)  # None (a problem) when missing
        password_file = Path(password) if password else None
        if username is None:
            a.error("username", "missing required key (password auth needs a username)")
    cert_file = key_file = None
    if auth_type in ("mtls", "jwt"):
        key = a.get("key_file", string, None)
        key_file = Path(key) if key else None
    if auth_type == "mtls":
        cert = a.get("cert_file", string, None)
        cert_file = Path(cert) if cert else None
    jwt_ttl = a.get("jwt_ttl", duration(lo=60.0), 3600.0) if auth_type == "jwt" else 3600.0
    jwt_audience = a.get("jwt_audience", string, None) if auth_type == "jwt" else None
    a.done()
    if auth_type in ("mtls",) and scheme not in TLS_SCHEMES:
        s.error("auth.type", "mtls needs a TLS url (mqtts:// or wss://)")

    ca = s.get("ca_file", string, None)
    cfg = UplinkConfig(
        name=name,
        url=url or "",
        scheme=scheme,
        host=host,
        port=port,
        ws_path=ws_path,
        topic_prefix=topic_prefix or "",
        auth=AuthConfig(
            type=auth_type or "none",
            username=username,
            password_file=password_file,
            cert_file=cert_file,
            key_file=key_file,
            jwt_ttl=jwt_ttl,
            jwt_audience=jwt_audience,
        ),
        select=s.get("select", string_list, ("*",)),
        client_id=s.get("client_id", nonempty_string, f"{gateway_id}-{name}"),
        protocol=s.get("protocol", choice("3.1.1", "5"), "3.1.1"),
        format=s.get("format", choice("json", "cbor"), "json"),
        ca_file=Path(ca) if ca else None,
        max_records=s.get("max_records", integer(1, 100_000), 500),
        max_bytes=s.get("max_bytes", size(lo=1024), 256 * 1024),
        max_delay=s.get("max_delay", duration(), 1.0),
        max_inflight=s.get("max_inflight", integer(1, 1000), 16),
        keepalive=s.get("keepalive", duration(lo=5.0), 30.0),
        connect_timeout=s.get("connect_timeout", duration(lo=0.1), 10.0),
        backoff_initial=s.get("backoff_initial", duration(lo=0.01), 1.0),
        backoff_max=s.get("backoff_max", duration(lo=0.01), 60.0),
        drain_rate=s.get("drain_rate", integer(0), 0),
        enabled=s.get("enabled", boolean, True),
        commands=s.get("commands", boolean, False),
    )
    s.done()
    return cfg
