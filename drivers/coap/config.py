"""The coap driver's options: the device URL, its resources and their points, timing.

``parse_options`` reads one ``[devices.NAME]`` table into frozen dataclasses,
recording every problem on the Section (it never raises). Defaults live here.

Each entry of ``resources`` is one point. Entries naming the same ``path`` are
served by one request (or one observation) and must agree on ``mode``,
``poll`` and ``format``: three fields of one JSON object cost one GET.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from gatewayd.config.section import (
    Section,
    choice,
    duration,
    nonempty_string,
    number,
    string,
)
from gatewayd.driver import Writable, parse_writable

FORMATS = ("text", "json", "cbor", "senml", "senml-cbor")
SENML_FORMATS = ("senml", "senml-cbor")
MODES = ("poll", "observe")
TYPES = ("number", "bool", "string")

DEFAULT_PORT = 5683
DEFAULT_POLL = 10.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_ACK_TIMEOUT = 2.0  # RFC 7252 §4.8
ACK_RANDOM_FACTOR = 1.5  # RFC 7252 §4.8
MAX_RETRANSMIT = 4  # RFC 7252 §4.8: the most this driver ever asks for
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_RETRY_DELAY_MAX = 60.0
DEFAULT_OBSERVE_GRACE = 5.0

POINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH = re.compile(r"/[^\s#]*")


@dataclass(frozen=True)
class Endpoint:
    """Where the device is: ``coap://HOST:PORT``."""

    host: str
    port: int = DEFAULT_PORT

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}"

    def uri(self, path: str) -> str:
        """The request URI of a resource path (``/sensors/temp?unit=C``)."""
        return self.url + path


def parse_endpoint(url: str) -> Endpoint:
    """The Endpoint of ``coap://HOST[:PORT]``. Raises ValueError saying what was expected."""
    parts = urlsplit(url)
    if parts.scheme == "coaps":
        raise ValueError("coaps:// (DTLS) is not supported: aiocoap's DTLS transport needs the "
                         "tinydtls binding, which gatewayd does not ship; use coap:// on a "
                         "trusted network")
    if parts.scheme != "coap":
        raise ValueError(f"unknown scheme in {url!r}; expected coap://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"unexpected path or query in {url!r}; expected coap://HOST[:PORT] "
                         "(resource paths go in resources[].path)")
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError as err:
        raise ValueError(f"invalid port in {url!r}") from err
    if not host:
        raise ValueError(f"missing host in {url!r}; expected coap://HOST[:PORT]")
    if port == 0:
        raise ValueError(f"invalid port 0 in {url!r}")
    return Endpoint(host=host, port=DEFAULT_PORT if port is None else port)


def max_retransmit(timeout: float, ack_timeout: float) -> int:
    """The most CON retransmissions (RFC 7252 §4.2) whose worst-case wait,
    ``ack_timeout * (2**(n+1) - 1) * ACK_RANDOM_FACTOR``, fits in ``timeout``:
    the message layer gives up on its own before the request's deadline."""
    n = 0
    while n < MAX_RETRANSMIT and \
            ack_timeout * (2 ** (n + 2) - 1) * ACK_RANDOM_FACTOR <= timeout + 1e-9:
        n += 1
    return n


@dataclass(frozen=True)
class CoapPoint:
    """One entry of ``resources``: one point read from a resource's payload."""

    name: str
    path: str
    mode: str  # poll | observe
    poll: float | None  # None when observed
    format: str  # text | json | cbor | senml | senml-cbor
    field: str | None  # JSON/CBOR key path (dotted) or SenML record name
    type: str | None  # number | bool | string; None: as the payload says
    unit: str | None
    scale: float
    offset: float
    writable: Writable | None

    @property
    def scaled(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0


@dataclass(frozen=True)
class CoapResource:
    """One resource path and the points its payload holds: one GET per poll, or
    one observation."""

    path: str
    mode: str
    poll: float | None
    format: str
    points: tuple[CoapPoint, ...]


@dataclass(frozen=True)
class CoapOptions:
    endpoint: Endpoint
    poll: float
    timeout: float
    ack_timeout: float
    retry_delay: float
    retry_delay_max: float
    observe_grace: float
    observe_refresh: float | None
    points: tuple[CoapPoint, ...]
    resources: tuple[CoapResource, ...]

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def max_retransmit(self) -> int:
        return max_retransmit(self.timeout, self.ack_timeout)

    def point(self, name: str) -> CoapPoint | None:
        for p in self.points:
            if p.name == name:
                return p
        return None


def _endpoint(value: object) -> Endpoint:
    return parse_endpoint(nonempty_string(value))


def _path(value: object) -> str:
    text = string(value)
    if not _PATH.fullmatch(text):
        raise ValueError(f"invalid path {text!r}; expected an absolute resource path such as "
                         "'/sensors/temp' (a query may follow: '/time?ticks')")
    return text


def _point_name(value: object) -> str:
    text = nonempty_string(value)
    if not POINT_NAME.fullmatch(text):
        raise ValueError(f"invalid point name {text!r}; expected letters, digits, '_', '-' or "
                         "'.' (at most 128, not starting with '-' or '.')")
    return text


def _as_is(value: object) -> object:
    return value


def parse_options(s: Section) -> CoapOptions:
    """Read a coap device table; every problem is recorded on ``s``."""
    endpoint = s.get("url", _endpoint)
    poll = s.get("poll", duration(lo=0.01), DEFAULT_POLL)
    timeout = s.get("timeout", duration(lo=0.01), DEFAULT_TIMEOUT)
    ack_timeout = s.get("ack_timeout", duration(lo=0.01), DEFAULT_ACK_TIMEOUT)
    if timeout < ack_timeout * ACK_RANDOM_FACTOR:
        s.error("timeout", f"expected at least 1.5 x ack_timeout ({ack_timeout:g}s), the "
                f"longest wait for one transmission, got {timeout:g}s")
    retry_delay = s.get("retry_delay", duration(lo=0.01), DEFAULT_RETRY_DELAY)
    retry_delay_max = s.get("retry_delay_max", duration(lo=0.01), DEFAULT_RETRY_DELAY_MAX)
    if retry_delay_max < retry_delay:
        s.error("retry_delay_max", f"expected at least retry_delay ({retry_delay:g}s), "
                f"got {retry_delay_max:g}s")
    observe_grace = s.get("observe_grace", duration(lo=0.1), DEFAULT_OBSERVE_GRACE)
    observe_refresh = s.get("observe_refresh", duration(lo=0.1), None)

    points: list[CoapPoint] = []
    sections: list[Section] = []
    seen: set[str] = set()
    entries = s.table_list("resources", required=True)
    if s.has("resources") and not entries:
        s.error("resources", "expected at least one resource")
    for rs in entries:
        point = _parse_point(rs, poll)
        rs.done()
        if point is None:
            continue
        if point.name in seen:
            rs.error("name", f"duplicate point name {point.name!r}")
        seen.add(point.name)
        points.append(point)
        sections.append(rs)
    resources = _group(points, sections)
    return CoapOptions(
        endpoint=endpoint or Endpoint(host="127.0.0.1"),
        poll=poll,
        timeout=timeout,
        ack_timeout=ack_timeout,
        retry_delay=retry_delay,
        retry_delay_max=retry_delay_max,
        observe_grace=observe_grace,
        observe_refresh=observe_refresh,
        points=tuple(points),
        resources=resources,
    )


def _parse_point(rs: Section, poll: float) -> CoapPoint | None:
    path = rs.get("path", _path)
    name = rs.get("name", _point_name)
    mode = rs.get("mode", choice(*MODES), "poll")
    point_poll = rs.get("poll", duration(lo=0.01), poll)
    if mode == "observe" and rs.has("poll"):
        rs.error("poll", 'poll applies to mode = "poll" only; an observed resource is sent '
                 "by the device when it changes")
    fmt = rs.get("format", choice(*FORMATS), "text")
    field = rs.get("field", nonempty_string, None)
    if field is not None and fmt == "text":
        rs.error("field", "field applies to json, cbor, senml and senml-cbor; a text payload "
                 "is one value")
    vtype = rs.get("type", choice(*TYPES), None)
    if vtype is None and fmt == "text":
        vtype = "number"
    unit = rs.get("unit", nonempty_string, None)
    scale = rs.get("scale", number, 1.0)
    offset = rs.get("offset", number, 0.0)
    if scale == 0.0 or not math.isfinite(scale):
        rs.error("scale", f"expected a finite non-zero number, got {scale!r}")
    if not math.isfinite(offset):
        rs.error("offset", f"expected a finite number, got {offset!r}")
    if vtype in ("bool", "string"):
        for key in ("scale", "offset"):
            if rs.has(key):
                rs.error(key, f"{key} applies to numbers only, not type = {vtype!r}")
    raw_writable = rs.get("writable", _as_is, None)
    if path is None or name is None or mode is None or fmt is None:
        return None
    point = CoapPoint(name=name, path=path, mode=mode,
                      poll=point_poll if mode == "poll" else None, format=fmt, field=field,
                      type=vtype, unit=unit, scale=scale, offset=offset, writable=None)
    writable = _parse_writable(rs, raw_writable, point)
    if writable is None:
        return point
    return replace(point, writable=writable)


def _parse_writable(rs: Section, raw: object, point: CoapPoint) -> Writable | None:
    if raw is None or raw is False:
        return None
    if point.format in SENML_FORMATS and point.field is None:
        rs.error("writable", "a writable SenML point needs field: the record name to PUT")
        return None
    return parse_writable(rs, raw, numeric=point.type in (None, "number"))


def _group(points: list[CoapPoint], sections: list[Section]) -> tuple[CoapResource, ...]:
    """One CoapResource per distinct path, in the order the paths first appear."""
    first: dict[str, CoapPoint] = {}
    members: dict[str, list[CoapPoint]] = {}
    for point, rs in zip(points, sections, strict=True):
        lead = first.setdefault(point.path, point)
        if lead is not point:
            keys = ("mode", "format") if point.mode != lead.mode else ("mode", "poll", "format")
            for key in keys:
                if getattr(point, key) != getattr(lead, key):
                    rs.error(key, f"differs from point {lead.name!r} on the same path "
                             f"{point.path!r}; one request serves a path, so its points "
                             "share mode, poll and format")
        members.setdefault(point.path, []).append(point)
    out = []
    for path, group in members.items():
        lead = first[path]
        if len(group) > 1:
            for point, rs in zip(points, sections, strict=True):
                if point.path == path and point.writable is not None:
                    rs.error("writable", f"path {path!r} holds several points: a PUT replaces "
                             "the whole representation, so none of them is writable")
        out.append(CoapResource(path=path, mode=lead.mode, poll=lead.poll, format=lead.format,
                                 points=tuple(group)))
    return tuple(out)
