"""The ``[tunnel]`` table, validated into frozen dataclasses (pure).

Every problem names its key path and what was expected; see docs/tunnel.md
for each key and its default.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
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
)
from gatewayd.config.units import parse_host_port

MODES = ("always", "on-demand")
TRANSPORTS = ("tcp", "websocket")
WS_SCHEMES = {"wss": 443, "ws": 80}
MAX_FORWARDS = 64
MAX_HOST_KEYS = 16

# Host key algorithms a pinned key may have (ssh-dss is disabled in OpenSSH >= 7.0).
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_UNSAFE_PATH = re.compile(r"[\"\n\r\x00]")


@dataclass(frozen=True)
class HostKey:
    """One pinned host key of the bastion: its algorithm and base64 blob."""

    type: str
    data: str

    def __str__(self) -> str:
        return f"{self.type} {self.data}"


@dataclass(frozen=True)
class Forward:
    """One allowed forward: the bastion listens on ``remote``, the gateway connects
    the forwarded connections to ``local``."""

    remote_host: str
    remote_port: int
    local_host: str
    local_port: int

    @property
    def remote(self) -> str:
        return _join(self.remote_host, self.remote_port)

    @property
    def local(self) -> str:
        return _join(self.local_host, self.local_port)

    def __str__(self) -> str:
        return f"{self.remote} -> {self.local}"


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class TunnelConfig:
    """The validated ``[tunnel]`` table."""

    host: str
    port: int
    user: str
    host_keys: tuple[HostKey, ...]
    key_file: Path
    forwards: tuple[Forward, ...]
    mode: str  # always | on-demand
    transport: str  # tcp | websocket
    url: str | None  # websocket only
    ca_file: Path | None  # websocket (wss) only; None = the system CA store
    ssh: str
    server_alive_interval: int  # seconds
    server_alive_count_max: int
    connect_timeout: int  # seconds
    backoff_initial: float
    backoff_max: float
    default_ttl: float
    max_ttl: float

    @property
    def bastion(self) -> str:
        """Where the tunnel goes, for logs and status (never with credentials)."""
        if self.transport == "websocket" and self.url:
            parts = urlsplit(self.url)  # the query may hold a token: never shown
            return f"{self.user}@{parts.scheme}://{parts.netloc}{parts.path}"
        return f"{self.user}@{_join(self.host, self.port)}"


# ---- converters (raise ValueError("expected ...")) ---------------------------


def host_name(value: object) -> str:
    """A DNS name or an IP address (no user, port or option-like text)."""
    s = nonempty_string(value)
    try:
        ipaddress.ip_address(s)
        return s
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(s):
        raise ValueError(f"invalid host {s!r}; expected a DNS name or an IP address")
    return s


def user_name(value: object) -> str:
    s = nonempty_string(value)
    if not _USER.fullmatch(s):
        raise ValueError(f"invalid user {s!r}; expected letters, digits, '_', '-' or '.'")
    return s


def safe_path(value: object) -> str:
    s = nonempty_string(value)
    if _UNSAFE_PATH.search(s):
        raise ValueError(f"invalid path {s!r}; it may not contain '\"' or control characters")
    return s


def _blob_type(blob: bytes) -> str:
    """The key type named at the start of an SSH public key blob."""
    if len(blob) < 4:
        raise ValueError("key data too short")
    (n,) = struct.unpack(">I", blob[:4])
    if n > 64 or len(blob) < 4 + n:
        raise ValueError("key data malformed")
    return blob[4:4 + n].decode("ascii", errors="replace")


def parse_host_key(text: str) -> HostKey:
    """One ``known_hosts`` line (``[host]:port TYPE BASE64 [comment]``) or just
    ``TYPE BASE64 [comment]`` (as in a ``.pub`` file). The host field is ignored:
    the key is pinned to the configured bastion. Raises ValueError."""
    fields = text.split()
    if not fields:
        raise ValueError("empty host key; expected a known_hosts line such as "
                         "'[bastion.example.net]:22 ssh-ed25519 AAAA...'")
    if fields[0].startswith("@"):
        raise ValueError(f"known_hosts markers such as {fields[0]!r} are not supported; "
                         "pin the bastion's host key itself")
    if fields[0] not in KEY_TYPES:
        fields = fields[1:]  # the host field of a known_hosts line
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise ValueError(f"invalid host key {text[:60]!r}; expected a known_hosts line "
                         f"with a key type ({', '.join(KEY_TYPES)}) and base64 key data")
    key_type, data = fields[0], fields[1]
    try:
        blob = base64.b64decode(data, validate=True)
        inner = _blob_type(blob)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"invalid {key_type} host key data ({err}); expected the base64 "
                         "field of a known_hosts line") from None
    if inner != key_type:
        raise ValueError(f"host key data is a {inner!r} key but the line says {key_type!r}")
    return HostKey(key_type, data)


def host_keys(value: object) -> tuple[HostKey, ...]:
    """A string (one line, or several separated by newlines) or an array of strings."""
    if isinstance(value, str):
        lines = [ln for ln in value.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        lines = list(value)
    else:
        raise ValueError("expected a known_hosts line or an array of them")
    if not lines:
        raise ValueError("expected at least one host key")
    if len(lines) > MAX_HOST_KEYS:
        raise ValueError(f"expected at most {MAX_HOST_KEYS} host keys, got {len(lines)}")
    return tuple(parse_host_key(line) for line in lines)


def _parse_url(s: Section) -> tuple[str | None, str | None]:
    """The websocket relay URL and its host name."""
    url = s.get("url", nonempty_string, None)
    if url is None:
        s.error("url", "missing required key (transport = \"websocket\" needs a wss:// URL)")
        return None, None
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. a bracketed host that is not an IP address
        s.error("url", f"invalid URL {url!r}: {err}")
        return None, None
    if parts.scheme not in WS_SCHEMES:
        s.error("url", f"unknown scheme {parts.scheme!r} in {url!r}; expected wss:// or ws://")
        return None, None
    if parts.username is not None or parts.password is not None:
        s.error("url", "credentials in the URL are not allowed")
        return None, None
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        s.error("url", f"invalid port in {url!r}")
        return None, None
    if not parts.hostname:
        s.error("url", f"no host in {url!r}; expected e.g. wss://relay.example.net/ssh")
        return None, None
    return url, parts.hostname


def _parse_forwards(s: Section) -> tuple[Forward, ...]:
    forwards: list[Forward] = []
    seen: set[tuple[str, int]] = set()
    items = s.table_list("forwards", required=True)
    if s.has("forwards") and not items:
        s.error("forwards", "expected at least one forward, e.g. "
                "{ remote = \"127.0.0.1:22001\", local = \"127.0.0.1:22\" }")
    if len(items) > MAX_FORWARDS:
        s.error("forwards", f"expected at most {MAX_FORWARDS} forwards, got {len(items)}")
    for f in items:
        remote = f.get("remote", nonempty_string)
        local = f.get("local", nonempty_string)
        f.done()
        parsed = []
        for key, text in (("remote", remote), ("local", local)):
            if text is None:
                continue
            try:
                parsed.append(parse_host_port(text))
            except ValueError as err:
                f.error(key, str(err))
        if len(parsed) != 2:
            continue
        (rh, rp), (lh, lp) = parsed
        if (rh, rp) in seen:
            f.error("remote", f"{_join(rh, rp)} is already forwarded by an earlier entry")
            continue
        seen.add((rh, rp))
        forwards.append(Forward(rh, rp, lh, lp))
    return tuple(forwards)


def parse_tunnel(root: Section, *, default_key_file: Path) -> TunnelConfig | None:
    """The ``[tunnel]`` table of ``root``; None when absent or ``enabled = false``.

    ``default_key_file`` is the gateway's SSH key as ``[identity]`` names it."""
    if not root.has("tunnel"):
        root.mark_used("tunnel")
        return None
    s = root.table("tunnel")
    enabled = s.get("enabled", boolean, True)
    transport = s.get("transport", choice(*TRANSPORTS), "tcp")
    url = url_host = None
    ca = None
    if transport == "websocket":
        url, url_host = _parse_url(s)
        ca = s.get("ca_file", safe_path, None)
    host = s.get("host", host_name, url_host or "") if transport == "websocket" else \
        s.get("host", host_name)
    port = s.get("port", integer(1, 65535), 22)
    user = s.get("user", user_name)
    keys = s.get("host_key", host_keys)
    key_file = s.get("key_file", safe_path, str(default_key_file))
    forwards = _parse_forwards(s)
    mode = s.get("mode", choice(*MODES), "on-demand")
    ssh = s.get("ssh", safe_path, "/usr/bin/ssh")
    alive = s.get("server_alive_interval", duration(lo=1.0), 15.0)
    alive_max = s.get("server_alive_count_max", integer(1, 100), 3)
    connect_timeout = s.get("connect_timeout", duration(lo=1.0), 15.0)
    backoff_initial = s.get("backoff_initial", duration(lo=0.01), 1.0)
    backoff_max = s.get("backoff_max", duration(lo=0.01), 60.0)
    default_ttl = s.get("default_ttl", duration(lo=1.0), 3600.0)
    max_ttl = s.get("max_ttl", duration(lo=1.0), 8 * 3600.0)
    if backoff_max < backoff_initial:
        s.error("backoff_max", "expected a duration of at least backoff_initial")
    if default_ttl > max_ttl:
        s.error("default_ttl", "expected a duration of at most max_ttl")
    if transport != "websocket" and s.has("url"):
        s.error("url", "only used with transport = \"websocket\"")
        s.mark_used("url")
    if transport != "websocket" and s.has("ca_file"):
        s.error("ca_file", "only used with transport = \"websocket\"")
        s.mark_used("ca_file")
    s.done()
    if not enabled:
        return None
    return TunnelConfig(
        host=host or "",
        port=port,
        user=user or "",
        host_keys=keys or (),
        key_file=Path(key_file),
        forwards=forwards,
        mode=mode,
        transport=transport,
        url=url,
        ca_file=Path(ca) if ca else None,
        ssh=ssh,
        server_alive_interval=max(1, round(alive)),
        server_alive_count_max=alive_max,
        connect_timeout=max(1, round(connect_timeout)),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
    )


__all__ = ["Forward", "HostKey", "TunnelConfig", "parse_host_key", "parse_tunnel"]
