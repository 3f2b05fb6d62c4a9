"""The modbus driver's options: endpoint URLs, point maps, polling and bus settings.

``parse_options`` reads one ``[devices.NAME]`` table into frozen dataclasses,
recording every problem on the Section (it never raises). Defaults live here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gatewayd.config.section import (
    Section,
    boolean,
    choice,
    duration,
    integer,
    nonempty_string,
    number,
    string,
)
from gatewayd.driver import Writable, parse_writable

from .codec import ORDERS, TYPE_NAMES, ValueType, parse_type

SCHEMES = ("tcp", "rtu", "rtu+tcp")
SPACES = ("hr", "ir", "co", "di")
BIT_SPACES = ("co", "di")
PARITIES = ("N", "E", "O")

DEFAULT_TCP_PORT = 502
DEFAULT_BAUDRATE = 19200
DEFAULT_PARITY = "E"  # the Modbus serial line specification's default
DEFAULT_POLL = 1.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_MAX_GAP = 10  # registers: about the cost of one extra request on a serial line
DEFAULT_MAX_BIT_GAP = 160  # bits: the same number of bytes as DEFAULT_MAX_GAP
MAX_REGISTERS = 125  # per read request (FC 3 / FC 4), from the Modbus specification
MAX_BITS = 2000  # per read request (FC 1 / FC 2)

_ADDRESS = re.compile(r"(hr|ir|co|di):(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Endpoint:
    """Where a bus is: a TCP server, a serial port, or a serial device server."""

    scheme: str  # tcp | rtu | rtu+tcp
    host: str = ""
    port: int = 0
    device: str = ""  # the serial port of rtu://
    baudrate: int = DEFAULT_BAUDRATE
    parity: str = DEFAULT_PARITY
    stopbits: int = 1
    bytesize: int = 8

    @property
    def is_serial(self) -> bool:
        return self.scheme == "rtu"

    @property
    def line(self) -> str:
        """The serial line setting, e.g. ``19200 8E1``."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def url(self) -> str:
        """The canonical URL (every serial parameter spelled out)."""
        if self.is_serial:
            return (f"rtu://{self.device}?baudrate={self.baudrate}&parity={self.parity}"
                    f"&stopbits={self.stopbits}&bytesize={self.bytesize}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def char_time(self) -> float:
        """Seconds one character takes on the serial line (start, data, parity, stop)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    def frame_silence(self) -> float:
        """The silence required between two RTU frames: 3.5 character times, and a
        fixed 1.75 ms above 19200 baud (Modbus over serial line, 2.5.1.1); none on TCP."""
        if not self.is_serial:
            return 0.0
        if self.baudrate > 19200:
            return 0.00175
        return 3.5 * self.char_time()


_ENDPOINT_FORMS = ("tcp://HOST[:PORT], rtu:///dev/PORT?baudrate=&parity=&stopbits=&bytesize= "
                   "or rtu+tcp://HOST:PORT")


def parse_endpoint(url: str) -> Endpoint:
    """The Endpoint named by ``url``. Raises ValueError saying what was expected."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme + '://' if scheme else url!r}; "
                         f"expected {_ENDPOINT_FORMS}")
    if scheme == "rtu":
        return _parse_serial(url, parts.netloc, parts.path, parts.query)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"unexpected path or query in {url!r}; expected {scheme}://HOST:PORT")
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError as err:
        raise ValueError(f"invalid port in {url!r}") from err
    if not host:
        raise ValueError(f"missing host in {url!r}; expected {scheme}://HOST:PORT")
    if port is None:
        if scheme == "rtu+tcp":
            raise ValueError(f"missing port in {url!r}; expected rtu+tcp://HOST:PORT")
        port = DEFAULT_TCP_PORT
    if port == 0:
        raise ValueError(f"invalid port 0 in {url!r}")
    return Endpoint(scheme=scheme, host=host, port=port)


def _parse_serial(url: str, netloc: str, path: str, query: str) -> Endpoint:
    if netloc or not path.startswith("/"):
        raise ValueError(f"invalid serial URL {url!r}; expected rtu:///dev/PORT?baudrate=...")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in ("baudrate", "parity", "stopbits", "bytesize"):
            raise ValueError(f"unknown serial parameter {key!r} in {url!r}; "
                             "expected baudrate, parity, stopbits or bytesize")
        params[key] = value
    baudrate = _int_param(params, "baudrate", DEFAULT_BAUDRATE, range(50, 4_000_001))
    stopbits = _int_param(params, "stopbits", 1, (1, 2))
    bytesize = _int_param(params, "bytesize", 8, (7, 8))
    parity = params.get("parity", DEFAULT_PARITY)
    if parity not in PARITIES:
        raise ValueError(f"invalid parity {parity!r} in {url!r}; expected N, E or O")
    return Endpoint(scheme="rtu", device=path, baudrate=baudrate, parity=parity,
                    stopbits=stopbits, bytesize=bytesize)


def _int_param(params: dict[str, str], key: str, default: int,
               allowed: range | tuple[int, ...]) -> int:
    text = params.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) not in allowed:
        shown = (f"{allowed.start} to {allowed.stop - 1}" if isinstance(allowed, range)
                 else " or ".join(str(a) for a in allowed))
        raise ValueError(f"invalid {key} {text!r}; expected {shown}")
    return int(text)


# ---- points ------------------------------------------------------------------


@dataclass(frozen=True)
class ModbusPoint:
    name: str
    unit_id: int
    space: str  # hr | ir | co | di
    address: int
    bit: int | None  # a bit of a register (hr:100.3)
    type: ValueType
    order: str
    scale: float
    offset: float
    unit: str | None  # SenML unit name
    poll: float
    writable: Writable | None

    @property
    def width(self) -> int:
        """How many registers (hr, ir) or bits (co, di) the point occupies."""
        if self.space in BIT_SPACES or self.bit is not None:
            return 1
        return self.type.registers

    @property
    def address_text(self) -> str:
        bit = f".{self.bit}" if self.bit is not None else ""
        return f"{self.space}:{self.address}{bit}"


@dataclass(frozen=True)
class ModbusOptions:
    endpoint: Endpoint
    unit_id: int
    poll: float
    timeout: float
    request_gap: float | None  # None: the line's frame silence
    max_gap: int
    max_bit_gap: int
    max_registers: int
    max_bits: int
    quarantine_after: int
    probe_interval: float
    probe_interval_max: float
    reconnect_delay: float
    reconnect_delay_max: float
    write_multiple: bool
    points: tuple[ModbusPoint, ...]

    @property
    def url(self) -> str:
        return self.endpoint.url

    def point(self, name: str) -> ModbusPoint | None:
        for p in self.points:
            if p.name == name:
                return p
        return None


def _endpoint(value: object) -> Endpoint:
    return parse_endpoint(nonempty_string(value))


def _as_is(value: object) -> object:
    return value


def parse_options(s: Section) -> ModbusOptions:
    """Read a modbus device table; every problem is recorded on ``s``."""
    endpoint = s.get("url", _endpoint)
    unit_hi = 255 if endpoint is not None and endpoint.scheme == "tcp" else 247
    unit_lo = 0 if unit_hi == 255 else 1
    unit_id = s.get("unit_id", integer(unit_lo, unit_hi), 1)
    poll = s.get("poll", duration(lo=0.01), DEFAULT_POLL)
    timeout = s.get("timeout", duration(lo=0.01), DEFAULT_TIMEOUT)
    request_gap = s.get("request_gap", duration(), None)
    max_gap = s.get("max_gap", integer(0, MAX_REGISTERS), DEFAULT_MAX_GAP)
    max_bit_gap = s.get("max_bit_gap", integer(0, MAX_BITS), DEFAULT_MAX_BIT_GAP)
    max_registers = s.get("max_registers", integer(1, MAX_REGISTERS), MAX_REGISTERS)
    max_bits = s.get("max_bits", integer(1, MAX_BITS), MAX_BITS)
    quarantine_after = s.get("quarantine_after", integer(1, 100), 3)
    probe_interval = s.get("probe_interval", duration(lo=0.01), 1.0)
    probe_interval_max = s.get("probe_interval_max", duration(lo=0.01), 60.0)
    if probe_interval_max < probe_interval:
        s.error("probe_interval_max", f"expected at least probe_interval "
                f"({probe_interval:g}s), got {probe_interval_max:g}s")
    reconnect_delay = s.get("reconnect_delay", duration(lo=0.01), 0.5)
    reconnect_delay_max = s.get("reconnect_delay_max", duration(lo=0.01), 30.0)
    if reconnect_delay_max < reconnect_delay:
        s.error("reconnect_delay_max", f"expected at least reconnect_delay "
                f"({reconnect_delay:g}s), got {reconnect_delay_max:g}s")
    write_multiple = s.get("write_multiple", boolean, False)

    points: list[ModbusPoint] = []
    seen: set[str] = set()
    point_sections = s.table_list("points", required=True)
    if s.has("points") and not point_sections:
        s.error("points", "expected at least one point")
    for ps in point_sections:
        point = _parse_point(ps, unit_id=unit_id, unit_range=(unit_lo, unit_hi), poll=poll,
                             max_registers=max_registers)
        ps.done()
        if point is None:
            continue
        if point.name in seen:
            ps.error("name", f"duplicate point name {point.name!r}")
        seen.add(point.name)
        points.append(point)
    return ModbusOptions(
        endpoint=endpoint or Endpoint(scheme="tcp"),
        unit_id=unit_id,
        poll=poll,
        timeout=timeout,
        request_gap=request_gap,
        max_gap=max_gap,
        max_bit_gap=max_bit_gap,
        max_registers=max_registers,
        max_bits=max_bits,
        quarantine_after=quarantine_after,
        probe_interval=probe_interval,
        probe_interval_max=probe_interval_max,
        reconnect_delay=reconnect_delay,
        reconnect_delay_max=reconnect_delay_max,
        write_multiple=write_multiple,
        points=tuple(points),
    )


def _address(value: object) -> tuple[str, int, int | None]:
    text = string(value)
    m = _ADDRESS.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid address {text!r}; expected SPACE:NUMBER or SPACE:NUMBER.BIT "
                         "with SPACE one of hr, ir, co, di (e.g. 'hr:100', 'hr:100.3')")
    space, number_text, bit_text = m.groups()
    address = int(number_text)
    if address > 0xFFFF:
        raise ValueError(f"invalid address {text!r}; expected a register number 0 to 65535")
    if bit_text is None:
        return space, address, None
    if space in BIT_SPACES:
        raise ValueError(f"invalid address {text!r}; a bit index applies to hr and ir only")
    bit = int(bit_text)
    if bit > 15:
        raise ValueError(f"invalid address {text!r}; expected a bit index 0 to 15")
    return space, address, bit


def _value_type(value: object) -> ValueType:
    text = string(value)
    if not text.startswith("string("):
        choice(*TYPE_NAMES)(text)  # raises with a "did you mean" hint
    return parse_type(text)


def _parse_point(ps: Section, *, unit_id: int, unit_range: tuple[int, int], poll: float,
                 max_registers: int) -> ModbusPoint | None:
    name = ps.get("name", nonempty_string)
    if name and "/" in name:
        ps.error("name", f"invalid point name {name!r}; '/' is not allowed")
    where = ps.get("address", _address)
    is_bits = where is not None and (where[0] in BIT_SPACES or where[2] is not None)
    vtype = ps.get("type", _value_type, ValueType("bool" if is_bits else "uint16"))
    order = ps.get("order", choice(*ORDERS), "ABCD")
    scale = ps.get("scale", number, 1.0)
    offset = ps.get("offset", number, 0.0)
    unit = ps.get("unit", nonempty_string, None)
    point_poll = ps.get("poll", duration(lo=0.01), poll)
    point_unit_id = ps.get("unit_id", integer(*unit_range), unit_id)
    raw_writable = ps.get("writable", _as_is, None)
    if name is None or where is None or vtype is None:
        return None
    space, address, bit = where
    if is_bits and vtype.name != "bool":
        what = f"a {space} point" if bit is None else "a bit address"
        ps.error("type", f"{what} is of type bool, got {vtype}")
        return None
    if ps.has("order") and (is_bits or vtype.name == "bool"):
        ps.error("order", "order applies to multi-byte register values only")
    if not vtype.is_numeric:
        for key in ("scale", "offset"):
            if ps.has(key):
                ps.error(key, f"{key} applies to numeric types only, not {vtype}")
    if scale == 0.0:
        ps.error("scale", "expected a non-zero number")
    if not is_bits and address + vtype.registers > 0x10000:
        ps.error("address", f"{vtype} at register {address} runs past register 65535")
    if not is_bits and vtype.registers > max_registers:
        ps.error("type", f"{vtype} needs {vtype.registers} registers, more than "
                 f"max_registers ({max_registers})")
    point = ModbusPoint(
        name=name, unit_id=point_unit_id, space=space, address=address, bit=bit,
        type=vtype, order=order, scale=scale, offset=offset, unit=unit, poll=point_poll,
        writable=None,
    )
    writable = _parse_writable(ps, raw_writable, point)
    if writable is None:
        return point
    return replace(point, writable=writable)


def _parse_writable(ps: Section, raw: Any, point: ModbusPoint) -> Writable | None:
    if raw is None or raw is False:
        return None
    if point.space in ("ir", "di"):
        kind = "input registers" if point.space == "ir" else "discrete inputs"
        ps.error("writable", f"{point.space} ({kind}) are read-only")
        return None
    if point.bit is not None:
        ps.error("writable", "a bit of a register cannot be written "
                 "(a read-modify-write would race the device); map a coil instead")
        return None
    return parse_writable(ps, raw, numeric=point.type.is_numeric)
