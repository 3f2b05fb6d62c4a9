"""The serial driver's options: port settings, protocol, fields, polling, reopening.

:func:`parse_options` reads one ``[devices.NAME]`` table into frozen dataclasses,
recording every problem on the Section (it never raises). Defaults live here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from gatewayd.config.section import (
    Section,
    boolean,
    choice,
    duration,
    integer,
    nonempty_string,
    number,
    string,
    string_list,
)

from .checksums import KINDS
from .framing import LENGTH_COUNTS, ChecksumSpec, FrameSpec, LengthField
from .nmea import POINTS as NMEA_POINTS
from .nmea import SUPPORTED as NMEA_SENTENCES
from .parsers import BINARY_TYPES, TEXT_TYPES, FieldSpec, binary_size

PROTOCOLS = ("nmea", "lines", "frames")
PARSERS = ("json", "csv", "kv", "regex")
PARITIES = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S",
            "N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}
FLOW_CONTROLS = ("none", "rtscts", "xonxoff")
ENDIANS = ("big", "little")

DEFAULT_BAUDRATE = 9600
DEFAULT_MAX_LINE = {"nmea": 256, "lines": 1024}
MAX_LINE_LIMIT = 65536
DEFAULT_MAX_FRAME = 256
DEFAULT_TIMEOUT = 1.0
DEFAULT_REOPEN_DELAY = 0.5
DEFAULT_REOPEN_MAX_DELAY = 30.0

_ESCAPES = {"\\": 0x5C, "r": 0x0D, "n": 0x0A, "t": 0x09, "0": 0x00, "e": 0x1B,
            "'": 0x27, '"': 0x22}
_POINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PortSettings:
    """How to open the port: ``path`` may be a /dev/serial/by-id/... link."""

    path: str
    baudrate: int = DEFAULT_BAUDRATE
    bytesize: int = 8
    parity: str = "N"  # N, E, O, M, S (pyserial's letters)
    stopbits: float = 1
    flow_control: str = "none"  # none | rtscts | xonxoff
    exclusive: bool = True

    @property
    def line(self) -> str:
        """The line setting, e.g. ``9600 8N1``."""
        stop = f"{self.stopbits:g}"
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


@dataclass(frozen=True)
class LineSettings:
    terminator: bytes = b"\n"
    max_line: int = 1024
    encoding: str = "utf-8"


@dataclass(frozen=True)
class NmeaSettings:
    sentences: tuple[str, ...] = NMEA_SENTENCES
    points: tuple[str, ...] = NMEA_POINTS
    once_per_epoch: bool = True
    require_checksum: bool = True


@dataclass(frozen=True)
class ParserSettings:
    kind: str  # json | csv | kv | regex
    delimiter: str = ","  # csv
    separator: str | None = None  # kv: None = commas, semicolons and white space
    assign: str = "="  # kv
    pattern: str = ""  # regex


@dataclass(frozen=True)
class PollSettings:
    """Polled mode: send ``query`` every ``interval``, expect ``replies`` records
    within ``timeout``."""

    interval: float
    query: bytes
    timeout: float = DEFAULT_TIMEOUT
    replies: int = 1


@dataclass(frozen=True)
class ReopenSettings:
    """Backoff between attempts to open the port: doubling from ``delay`` up to
    ``max_delay``, forever (an adapter may come back at any time)."""

    delay: float = DEFAULT_REOPEN_DELAY
    max_delay: float = DEFAULT_REOPEN_MAX_DELAY

    def after(self, attempt: int) -> float:
        """The wait before open attempt ``attempt`` + 1 (attempt counts from 0)."""
        return min(self.max_delay, self.delay * 2.0 ** min(attempt, 32))


@dataclass(frozen=True)
class SerialOptions:
    port: PortSettings
    protocol: str  # nmea | lines | frames
    lines: LineSettings
    nmea: NmeaSettings | None = None
    parser: ParserSettings | None = None
    frame: FrameSpec | None = None
    fields: tuple[FieldSpec, ...] = ()
    poll: PollSettings | None = None
    reopen: ReopenSettings = ReopenSettings()


# ---- converters -------------------------------------------------------------


def unescape(text: str) -> bytes:
    """``"R\\r\\n"`` or ``"\\x02Q\\x03"`` into bytes. Raises ValueError.

    Escapes: ``\\r \\n \\t \\0 \\e \\\\ \\' \\"`` and ``\\xHH``; other characters
    must be in the range 0-255 (TOML's own escapes arrive already decoded).
    """
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            if ord(c) > 0xFF:
                raise ValueError(f"character {c!r} is not a single byte; use \\xHH escapes")
            out.append(ord(c))
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError(f"invalid escape {text[i:i + 4]!r}; expected \\r, \\n, \\t, \\0, "
                             "\\e, \\\\ or \\xHH")
    return bytes(out)


def escaped_bytes(value: object) -> bytes:
    return unescape(string(value))


def nonempty_escaped_bytes(value: object) -> bytes:
    data = escaped_bytes(value)
    if not data:
        raise ValueError("expected at least one byte")
    return data


def hex_bytes(value: object) -> bytes:
    """``"AA 55"``, ``"AA55"``, ``"aa:55"`` or ``"0xAA 0x55"`` into bytes."""
    text = string(value)
    compact = re.sub(r"0[xX]([0-9A-Fa-f]{2})", r"\1", text)
    compact = re.sub(r"[\s:,_-]", "", compact)
    if len(compact) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", compact):
        raise ValueError(f"invalid hex bytes {text!r}; expected pairs of hex digits "
                         "such as 'AA 55'")
    return bytes.fromhex(compact)


def nonempty_hex_bytes(value: object) -> bytes:
    data = hex_bytes(value)
    if not data:
        raise ValueError("expected at least one byte")
    return data


def stopbits(value: object) -> float:
    n = number(value)
    if n not in (1, 1.5, 2):
        raise ValueError(f"expected 1, 1.5 or 2, got {value!r}")
    return n


def parity(value: object) -> str:
    s = string(value)
    if s not in PARITIES:
        raise ValueError(f"unknown parity {s!r}; expected one of none, even, odd, mark, space")
    return PARITIES[s]


def length_size(value: object) -> int:
    n = integer()(value)
    if n not in (1, 2, 4):
        raise ValueError(f"expected 1, 2 or 4, got {n}")
    return n


def encoding(value: object) -> str:
    s = nonempty_string(value)
    try:
        "".encode(s)
    except LookupError as err:
        raise ValueError(f"unknown encoding {s!r}; expected e.g. utf-8, ascii, latin-1") from err
    return s


def subset(options: tuple[str, ...]) -> Callable[[object], tuple[str, ...]]:
    def conv(value: object) -> tuple[str, ...]:
        items = string_list(value)
        for item in items:
            if item not in options:
                raise ValueError(f"unknown value {item!r}; expected some of {', '.join(options)}")
        if not items:
            raise ValueError(f"expected at least one of {', '.join(options)}")
        return items

    return conv


# ---- the device table -------------------------------------------------------


def parse_options(s: Section) -> SerialOptions:
    """Read the serial driver's keys of one device table (records problems, never raises)."""
    port = PortSettings(
        path=s.get("port", nonempty_string),
        baudrate=s.get("baudrate", integer(50, 4_000_000), DEFAULT_BAUDRATE),
        bytesize=s.get("bytesize", integer(5, 8), 8),
        parity=s.get("parity", parity, "N"),
        stopbits=s.get("stopbits", stopbits, 1.0),
        flow_control=s.get("flow_control", choice(*FLOW_CONTROLS), "none"),
        exclusive=s.get("exclusive", boolean, True),
    )
    protocol = s.get("protocol", choice(*PROTOCOLS))
    if protocol is None:
        s.mark_used(*s.keys())  # what the other keys mean depends on the protocol
        return SerialOptions(port=port, protocol="lines", lines=LineSettings())
    lines = LineSettings()
    nmea = None
    parser = None
    frame = None
    fields: tuple[FieldSpec, ...] = ()
    if protocol in ("nmea", "lines"):
        lines = LineSettings(
            terminator=s.get("terminator", nonempty_escaped_bytes, b"\n"),
            max_line=s.get("max_line", integer(1, MAX_LINE_LIMIT), DEFAULT_MAX_LINE[protocol]),
            encoding=s.get("encoding", encoding, "utf-8") if protocol == "lines" else "ascii",
        )
    if protocol == "nmea":
        nmea = _parse_nmea(s)
    elif protocol == "lines":
        parser = _parse_parser(s)
        if parser is None:
            s.mark_used("fields")  # what a field needs depends on the parser
        else:
            fields = _parse_fields(s, parser, None)
    else:
        frame_table = s.table("frame", required=True)
        frame = _parse_frame(frame_table) if s.has("frame") else None
        fields = _parse_fields(s, None, frame)
    return SerialOptions(
        port=port,
        protocol=protocol,
        lines=lines,
        nmea=nmea,
        parser=parser,
        frame=frame,
        fields=fields,
        poll=_parse_poll(s),
        reopen=_parse_reopen(s),
    )


def _parse_nmea(s: Section) -> NmeaSettings:
    if s.has("fields"):
        s.mark_used("fields")
        s.error("fields", "not used with protocol 'nmea'; points selects the NMEA points "
                f"({', '.join(NMEA_POINTS)})")
    return NmeaSettings(
        sentences=s.get("sentences", subset(NMEA_SENTENCES), NMEA_SENTENCES),
        points=s.get("points", subset(NMEA_POINTS), NMEA_POINTS),
        once_per_epoch=s.get("once_per_epoch", boolean, True),
        require_checksum=s.get("require_checksum", boolean, True),
    )


def _parse_parser(s: Section) -> ParserSettings | None:
    kind = s.get("parser", choice(*PARSERS))
    if kind is None:
        return None
    if kind == "csv":
        delimiter = s.get("delimiter", escaped_bytes, b",")
        if len(delimiter) != 1:
            s.error("delimiter", f"expected one character, got {len(delimiter)}")
            delimiter = b","
        return ParserSettings(kind, delimiter=delimiter.decode("latin-1"))
    if kind == "kv":
        return ParserSettings(kind, separator=s.get("separator", nonempty_string, None),
                              assign=s.get("assign", nonempty_string, "="))
    if kind == "regex":
        pattern = s.get("pattern", nonempty_string)
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                s.error("pattern", f"invalid regular expression: {err}")
            else:
                if not compiled.groupindex:
                    s.error("pattern", "expected at least one named group, e.g. (?P<weight>...)")
        return ParserSettings(kind, pattern=pattern or "")
    return ParserSettings(kind)


def _parse_fields(s: Section, parser: ParserSettings | None,
                  frame: FrameSpec | None) -> tuple[FieldSpec, ...]:
    required = parser is None or parser.kind in ("csv", "regex")
    out: list[FieldSpec] = []
    seen: set[str] = set()
    for fs in s.table_list("fields", required=required):
        field = _parse_field(fs, parser, frame)
        if field.name in seen:
            fs.error("name", f"duplicate field name {field.name!r}")
        seen.add(field.name)
        out.append(field)
        fs.done()
    return tuple(out)


def _parse_field(fs: Section, parser: ParserSettings | None, frame: FrameSpec | None) -> FieldSpec:
    name = fs.get("name", nonempty_string) or ""
    if name and not _POINT_NAME.fullmatch(name):
        fs.error("name", f"invalid point name {name!r}; expected letters, digits, '_', '-' or "
                 "'.' ('/' is not allowed)")
    types = BINARY_TYPES if parser is None else TEXT_TYPES
    default_type = "uint16" if parser is None else "float"
    ftype = fs.get("type", choice(*types), default_type)
    scale = fs.get("scale", number, 1.0)
    offset = fs.get("offset", number, 0.0)
    if (scale != 1.0 or offset != 0.0) and ftype in ("bool", "string"):
        fs.error("scale" if scale != 1.0 else "offset",
                 f"scale and offset apply to numbers only, not to type {ftype!r}")
    base = FieldSpec(name=name, type=ftype, scale=scale, offset=offset,
                     unit=fs.get("unit", nonempty_string, None),
                     optional=fs.get("optional", boolean, False))
    if parser is None:
        return _binary_field(fs, base, frame)
    if parser.kind == "csv":
        return replace(base, column=fs.get("column", integer(0, 1023)))
    if parser.kind == "regex":
        group = fs.get("group", nonempty_string, name)
        if group and parser.pattern:
            try:
                groups = re.compile(parser.pattern).groupindex
            except re.error:
                groups = None
            if groups is not None and group not in groups:
                fs.error("group" if fs.has("group") else "name",
                         f"no group named {group!r} in the pattern; expected one of "
                         f"{', '.join(groups) or '(none)'}")
        return replace(base, group=group)
    return replace(base, key=fs.get("key", nonempty_string, name))


def _binary_field(fs: Section, base: FieldSpec, frame: FrameSpec | None) -> FieldSpec:
    ftype = base.type
    at = fs.get("at", integer(0, MAX_LINE_LIMIT))
    endian = fs.get("endian", choice(*ENDIANS), "big")
    bit = fs.get("bit", integer(0, 7), None) if ftype == "bool" else None
    if at is not None and frame is not None and frame.size is not None:
        if at + binary_size(ftype) > frame.size:
            fs.error("at", f"a {ftype} at byte {at} ends past the {frame.size}-byte frame")
    return replace(base, at=at, endian=endian, bit=bit)


def _parse_frame(f: Section) -> FrameSpec | None:
    start = f.get("start", hex_bytes, b"")
    size = f.get("size", integer(1, MAX_LINE_LIMIT), None)
    length = None
    if f.has("length"):
        ls = f.table("length")
        length = LengthField(
            at=ls.get("at", integer(0, MAX_LINE_LIMIT)),
            size=ls.get("size", length_size, 1),
            endian=ls.get("endian", choice(*ENDIANS), "big"),
            counts=ls.get("counts", choice(*LENGTH_COUNTS), "payload"),
            adjust=ls.get("adjust", integer(-MAX_LINE_LIMIT, MAX_LINE_LIMIT), 0),
        )
        ls.done()
        if length.at is None:
            length = None
    checksum = None
    if f.has("checksum"):
        cs = f.table("checksum")
        kind = cs.get("kind", choice(*KINDS))
        checksum = ChecksumSpec(
            kind=kind or "xor",
            start=cs.get("from", integer(0, MAX_LINE_LIMIT), 0),
            order=cs.get("order", choice(*ENDIANS), None),
        )
        cs.done()
        if kind is None:
            checksum = None
    spec = FrameSpec(
        start=start,
        size=size,
        length=length,
        checksum=checksum,
        end=f.get("end", hex_bytes, b""),
        max_frame=f.get("max_frame", integer(1, MAX_LINE_LIMIT), DEFAULT_MAX_FRAME),
    )
    f.done()
    exclusive = "expected exactly one of size or length"
    if f.has("size") == f.has("length"):
        f.error(None, exclusive)
    if (f.has("length") and length is None) or (f.has("checksum") and checksum is None):
        return spec  # the sub-table's own problem is recorded; the rest depends on it
    for problem in spec.problems():
        if problem != exclusive:
            f.error(None, problem)
    return spec


def _parse_poll(s: Section) -> PollSettings | None:
    if not s.has("poll"):
        for key in ("query", "query_hex", "timeout", "replies"):
            if s.has(key):
                s.mark_used(key)
                s.error(key, "only used in polled mode; set poll as well")
        return None
    interval = s.get("poll", duration(lo=0.001), 1.0)
    if s.has("query") == s.has("query_hex"):
        s.mark_used("query", "query_hex")
        s.error(None, "polled mode needs exactly one of query (text with escapes) "
                "or query_hex (hex bytes)")
        query = b""
    elif s.has("query"):
        query = s.get("query", nonempty_escaped_bytes, b"")
    else:
        query = s.get("query_hex", nonempty_hex_bytes, b"")
    timeout = s.get("timeout", duration(lo=0.001), min(DEFAULT_TIMEOUT, interval))
    if timeout > interval:
        s.error("timeout", f"expected a timeout no longer than poll ({interval:g}s), "
                f"got {timeout:g}s")
    return PollSettings(interval=interval, query=query, timeout=timeout,
                        replies=s.get("replies", integer(1, 1000), 1))


def _parse_reopen(s: Section) -> ReopenSettings:
    delay = s.get("reopen_delay", duration(lo=0.001), DEFAULT_REOPEN_DELAY)
    max_delay = s.get("reopen_delay_max", duration(lo=0.001), DEFAULT_REOPEN_MAX_DELAY)
    if max_delay < delay:
        s.error("reopen_delay_max", f"expected at least reopen_delay ({delay:g}s), "
                f"got {max_delay:g}s")
        max_delay = delay
    return ReopenSettings(delay=delay, max_delay=max_delay)
