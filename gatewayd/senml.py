"""SenML packs (RFC 8428): Readings to JSON or CBOR bytes and back. Pure, no I/O.

Encoding. The first record carries the base name ``urn:dev:gw:{gateway id}:``
and the base time ``bt`` = the first reading's time in seconds (a float); each
other record carries ``t`` = its time relative to ``bt`` in seconds (omitted
when zero). Names are ``{device}/{point}``. Values: float and int → ``v``,
bool → ``vb``, str → ``vs``, bytes → ``vd`` (base64url without padding in
JSON, a byte string in CBOR). Units go in ``u``.

JSON has no NaN or infinity: a non-finite float is sent as the string value
``vs`` = ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (CBOR keeps the float).

Times are UTC nanoseconds in a Reading and float seconds on the wire: at the
current epoch a float64 resolves about 0.24 µs, so a decoded time is within
1 µs of the encoded one; times relative to ``bt`` keep nanoseconds (for packs
spanning up to a day, far more than a batch ever does).

:func:`encode_packs` splits a list of readings into packs of at most
``max_bytes`` each (never dropping a reading); a single record larger than
``max_bytes`` on its own is the only exception and goes out alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from gatewayd.errors import ProtocolError
from gatewayd.reading import Reading, Value

FORMATS: Final = ("json", "cbor")
CONTENT_TYPES: Final = {"json": "application/senml+json", "cbor": "application/senml+cbor"}

# RFC 8428 §6: integer labels of the CBOR representation.
CBOR_LABELS: Final = {
    "bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
    "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8,
}
_LABEL_NAMES: Final = {code: name for name, code in CBOR_LABELS.items()}
_VALUE_KEYS: Final = ("v", "vs", "vb", "vd")
_KNOWN: Final = frozenset(CBOR_LABELS)
# RFC 8428 §4.5.3: a resolved time below 2**28 s is relative to "now".
RELATIVE_TIME_LIMIT: Final = 2**28
_NS = 1_000_000_000
_JSON_SEPARATORS: Final = (",", ":")


def base_name(gateway_id: str) -> str:
    """The SenML base name of every pack this gateway sends."""
    return f"urn:dev:gw:{gateway_id}:"


# ---------------------------------------------------------------- encoding


class _Labels:
    """The record labels of one representation: names in JSON, integers in CBOR."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.bn, self.bt, self.n, self.u = table["bn"], table["bt"], table["n"], table["u"]
        self.v, self.vb, self.vs, self.vd, self.t = (
            table["v"], table["vb"], table["vs"], table["vd"], table["t"])


_JSON_LABELS: Final = _Labels({k: k for k in CBOR_LABELS})
_CBOR_LABELS: Final = _Labels(CBOR_LABELS)


def _records(readings: Sequence[Reading], bn: str, *, cbor: bool) -> list[dict[Any, Any]]:
    """SenML records in the labels of the format; one loop, no call per record."""
    lb = _CBOR_LABELS if cbor else _JSON_LABELS
    n_, u_, v_, vb_, vs_, vd_, t_ = lb.n, lb.u, lb.v, lb.vb, lb.vs, lb.vd, lb.t
    t0 = readings[0].time
    out: list[dict[Any, Any]] = []
    append = out.append
    for r in readings:
        value = r.value
        kind = type(value)
        rec: dict[Any, Any] = {n_: f"{r.device}/{r.point}"}
        if r.unit is not None:
            rec[u_] = r.unit
        if kind is float or kind is int:
            rec[v_] = value
        elif kind is bool:
            rec[vb_] = value
        elif kind is str:
            rec[vs_] = value
        elif kind is bytes:
            rec[vd_] = value if cbor else _b64url(value)  # type: ignore[arg-type]
        else:
            _add_value(rec, value, lb, cbor=cbor)
        dt = r.time - t0
        if dt:
            rec[t_] = dt / _NS
        append(rec)
    out[0] = {lb.bn: bn, lb.bt: t0 / _NS, **out[0]}
    return out


def _add_value(rec: dict[Any, Any], value: Value, lb: _Labels, *, cbor: bool) -> None:
    """Subclasses of the value types (IntEnum, str enums …): the slow path."""
    if isinstance(value, bool):
        rec[lb.vb] = bool(value)
    elif isinstance(value, int):
        rec[lb.v] = int(value)
    elif isinstance(value, float):
        rec[lb.v] = float(value)
    elif isinstance(value, str):
        rec[lb.vs] = str(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        rec[lb.vd] = bytes(value) if cbor else _b64url(bytes(value))
    else:
        raise ProtocolError(f"cannot encode a value of type {type(value).__name__} in SenML")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _non_finite_as_strings(records: list[dict[Any, Any]]) -> None:
    for i, rec in enumerate(records):
        v = rec.get("v")
        if isinstance(v, float) and not math.isfinite(v):
            text = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            records[i] = {("vs" if k == "v" else k): (text if k == "v" else x)
                          for k, x in rec.items()}


def _dump(records: list[dict[Any, Any]], fmt: str) -> bytes:
    if fmt == "json":
        try:
            text = json.dumps(records, separators=_JSON_SEPARATORS, ensure_ascii=False,
                              allow_nan=False)
        except ValueError:
            _non_finite_as_strings(records)
            text = json.dumps(records, separators=_JSON_SEPARATORS, ensure_ascii=False)
        return text.encode()
    return bytes(cbor2.dumps(records))


def encode(readings: Sequence[Reading], *, gateway_id: str, fmt: str = "json") -> bytes:
    """One SenML pack holding every reading, in order.

    Raises ProtocolError for an empty list, an unknown format or a value type
    SenML cannot carry.
    """
    if not readings:
        raise ProtocolError("cannot encode an empty SenML pack")
    if fmt not in FORMATS:
        raise ProtocolError(f"unknown SenML format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _dump(_records(readings, base_name(gateway_id), cbor=fmt == "cbor"), fmt)


@dataclass(frozen=True, slots=True)
class Pack:
    """One encoded SenML pack and the number of readings in it."""

    payload: bytes
    count: int


def encode_packs(readings: Sequence[Reading], *, gateway_id: str, fmt: str = "json",
                 max_bytes: int) -> list[Pack]:
    """SenML packs of at most ``max_bytes`` each holding every reading, in order.

    The readings are split into consecutive runs (never reordered, never
    dropped); each pack has its own base name and base time. A reading whose
    record alone exceeds ``max_bytes`` goes out alone in an oversized pack.
    Returns ``[]`` for no readings. Raises ProtocolError as :func:`encode`.
    """
    if not readings:
        return []
    if max_bytes < 1:
        raise ProtocolError(f"max_bytes must be positive, got {max_bytes}")
    out: list[Pack] = []
    _split_into(out, readings, gateway_id, fmt, max_bytes)
    return out


def encode_pack(readings: Sequence[Reading], *, gateway_id: str, fmt: str = "json",
                max_bytes: int) -> list[bytes]:
    """The payloads of :func:`encode_packs`."""
    return [p.payload for p in encode_packs(readings, gateway_id=gateway_id, fmt=fmt,
                                            max_bytes=max_bytes)]


def _split_into(out: list[Pack], readings: Sequence[Reading], gateway_id: str, fmt: str,
                max_bytes: int) -> None:
    data = encode(readings, gateway_id=gateway_id, fmt=fmt)
    n = len(readings)
    if len(data) <= max_bytes or n == 1:
        out.append(Pack(data, n))
        return
    # Aim each part at 90 % of the limit from the average record size, then
    # recurse on any part that is still too large.
    parts = min(n, math.ceil(len(data) / (max_bytes * 0.9)))
    step = math.ceil(n / parts)
    if step >= n:
        step = (n + 1) // 2
    for start in range(0, n, step):
        _split_into(out, readings[start:start + step], gateway_id, fmt, max_bytes)


# ---------------------------------------------------------------- decoding


def decode(data: bytes, *, fmt: str = "json", now_ns: int = 0) -> list[Reading]:
    """The Readings of one SenML pack, base fields resolved, values exact.

    The name of each record (base name + name) minus the pack's base name is
    split on its first ``/`` into device and point. A resolved time below
    2**28 s is relative to ``now_ns`` (RFC 8428 §4.5.3): pass the time of
    reception when decoding packs from devices.

    Raises ProtocolError naming the record for malformed input.
    """
    if fmt == "json":
        try:
            pack = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # Recursion: [[[[...
            raise ProtocolError(f"SenML JSON: not valid JSON: {err}") from err
    elif fmt == "cbor":
        try:
            raw = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError, RecursionError,
                MemoryError) as err:  # deep nesting: RecursionError, or MemoryError (cbor2 5)
            raise ProtocolError(f"SenML CBOR: not valid CBOR: {err}") from err
        pack = _cbor_to_labels(raw)
    else:
        raise ProtocolError(f"unknown SenML format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _resolve(pack, cbor=fmt == "cbor", now_ns=now_ns)


def _cbor_to_labels(raw: object) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ProtocolError("SenML CBOR: a pack must be an array of records")
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise ProtocolError(f"SenML record {i}: expected a map")
        named: dict[str, Any] = {}
        for key, value in rec.items():
            name = _LABEL_NAMES.get(key) if isinstance(key, int) else key
            if not isinstance(name, str):
                raise ProtocolError(f"SenML record {i}: unknown label {key!r}")
            named[name] = value
        out.append(named)
    return out


def _number(rec: dict[str, Any], key: str, i: int) -> float:
    value = rec[key]
    if type(value) not in (int, float):
        raise ProtocolError(f"SenML record {i}: {key!r} must be a number, got {value!r}")
    return value  # type: ignore[no-any-return]


def _text(rec: dict[str, Any], key: str, i: int) -> str:
    value = rec[key]
    if not isinstance(value, str):
        raise ProtocolError(f"SenML record {i}: {key!r} must be a string, got {value!r}")
    return value


def _seconds_to_ns(seconds: float) -> int:
    if isinstance(seconds, int):
        return seconds * _NS
    ns = seconds * _NS
    if not math.isfinite(ns):  # NaN, infinity, or a finite time beyond 1e299 s
        raise ValueError("non-finite time")
    return round(ns)


def _resolve(pack: object, *, cbor: bool, now_ns: int) -> list[Reading]:
    if not isinstance(pack, list):
        raise ProtocolError("SenML: a pack must be an array of records")
    bn, bt_ns, bu = "", 0, None
    bv: float = 0
    pack_bn: str | None = None
    out: list[Reading] = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise ProtocolError(f"SenML record {i}: expected an object")
        unknown = [k for k in rec if k not in _KNOWN]
        if unknown:
            # RFC 8428 §4.4: labels ending in "_" must be understood; others are ignored.
            must = [k for k in unknown if isinstance(k, str) and k.endswith("_")]
            if must:
                raise ProtocolError(f"SenML record {i}: unsupported label {must[0]!r}")
        try:
            if "bver" in rec and _number(rec, "bver", i) > 10:
                raise ProtocolError(f"SenML record {i}: unsupported version {rec['bver']!r}")
            if "bn" in rec:
                bn = _text(rec, "bn", i)
                if pack_bn is None:
                    pack_bn = bn
            if "bt" in rec:
                bt_ns = _seconds_to_ns(_number(rec, "bt", i))
            if "bu" in rec:
                bu = _text(rec, "bu", i)
            if "bv" in rec:
                bv = _number(rec, "bv", i)
            n = _text(rec, "n", i) if "n" in rec else ""
            unit = _text(rec, "u", i) if "u" in rec else bu
            t_ns = _seconds_to_ns(_number(rec, "t", i)) if "t" in rec else 0
        except ValueError as err:
            raise ProtocolError(f"SenML record {i}: invalid time: {err}") from err
        value = _value(rec, i, bv, cbor=cbor)
        name = bn + n
        if pack_bn and name.startswith(pack_bn):
            name = name[len(pack_bn):]
        device, sep, point = name.partition("/")
        if not sep or not device or not point:
            raise ProtocolError(f"SenML record {i}: name {name!r} is not 'device/point'")
        time_ns = bt_ns + t_ns
        if time_ns < RELATIVE_TIME_LIMIT * _NS:
            time_ns += now_ns
        out.append(Reading(device, point, value, unit, time_ns))
    return out


def _value(rec: dict[str, Any], i: int, bv: float, *, cbor: bool) -> Value:
    present = [k for k in _VALUE_KEYS if k in rec]
    if len(present) != 1:
        what = "no value" if not present else f"several values ({', '.join(present)})"
        raise ProtocolError(f"SenML record {i}: {what}")
    key = present[0]
    value = rec[key]
    if key == "v":
        number = _number(rec, "v", i)
        return number + bv if bv else number
    if key == "vb":
        if type(value) is not bool:
            raise ProtocolError(f"SenML record {i}: 'vb' must be a boolean, got {value!r}")
        return value
    if key == "vs":
        return _text(rec, "vs", i)
    if cbor:
        if not isinstance(value, bytes):
            raise ProtocolError(f"SenML record {i}: 'vd' must be a byte string")
        return value
    text = _text(rec, "vd", i)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(f"SenML record {i}: 'vd' is not base64url: {err}") from err
