"""Payloads of CoAP resources to Readings, and write values to PUT payloads. Pure, no I/O.

Formats:

``text``
    the payload is one value as UTF-8 text (``21.5``, ``-3``, ``true``); white
    space around it is ignored.
``json`` / ``cbor``
    a scalar, or an object whose value at ``field`` (a dotted key path:
    ``env.temp``; a digit indexes an array: ``values.0``) is the point's.
``senml`` / ``senml-cbor``
    a SenML pack (RFC 8428), decoded by :mod:`gatewayd.senml`. A record's
    name is its full name minus the pack's base name (the first ``bn``). With
    ``field`` the records of that name give the point; without, every record
    is a point ``{name}.{record}`` (``{name}`` for a record without a name).
    A record's time is kept (relative times count from reception); its unit
    is used unless the point names one.

A value becomes the point's ``type`` (``number``, ``bool``, ``string``; when
unset, as sent) and numbers are scaled: ``raw * scale + offset``. A payload
that cannot be read at all raises a :class:`~.errors.PayloadError`; a point
whose value is missing or unusable is reported as an error of that point
while the other points of the payload still give readings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2

from gatewayd import senml
from gatewayd.errors import ProtocolError, WriteRefused
from gatewayd.reading import Reading, Value

from .config import POINT_NAME, SENML_FORMATS, CoapPoint, CoapResource
from .errors import InvalidValue, MalformedPayload, MissingField, PayloadError

MAX_PAYLOAD: Final = 65536  # bytes; a larger representation is refused whole
MAX_RECORDS: Final = 1000  # SenML records per payload

# CoAP Content-Formats (RFC 7252 §12.3, RFC 8428 §12.3, RFC 8949 §9.5)
CONTENT_FORMATS: Final = {"text": 0, "json": 50, "cbor": 60, "senml": 110, "senml-cbor": 112}

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})
# A record's local name travels through gatewayd.senml as point "={name}" of device "d"
# (the mark keeps an empty name a valid point).
_MARK = "="
_SENML_NAME_PREFIX = f"d/{_MARK}"


@dataclass
class Decoded:
    """What one payload gave: readings, and the errors of points it could not give."""

    readings: list[Reading] = field(default_factory=list)
    errors: list[tuple[str, PayloadError]] = field(default_factory=list)  # (point, error)


def decode(resource: CoapResource, payload: bytes, *, device: str, now_ns: int) -> Decoded:
    """The readings of every point of ``resource`` in one response payload.

    Raises MalformedPayload when the payload as a whole cannot be read (not
    UTF-8, JSON, CBOR or SenML, too large). Errors of single points (a missing
    field, a value of the wrong kind) are returned in ``Decoded.errors``.
    """
    fmt, path = resource.format, resource.path
    if len(payload) > MAX_PAYLOAD:
        raise MalformedPayload(f"{len(payload)} bytes; at most {MAX_PAYLOAD} are read",
                               format=fmt, path=path)
    out = Decoded()
    if fmt in SENML_FORMATS:
        records = senml_records(payload, fmt=fmt, path=path, now_ns=now_ns)
        for point in resource.points:
            _senml_point(point, records, device, out)
        return out
    doc = _parse(payload, fmt, path)
    for point in resource.points:
        try:
            raw = doc if point.field is None else lookup(doc, point.field, fmt=fmt, path=path)
            value = convert(point, raw)
        except PayloadError as err:
            out.errors.append((point.name, err))
            continue
        out.readings.append(Reading(device, point.name, value, point.unit, now_ns))
    return out


# ---- parsing ---------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(payload: bytes, fmt: str, path: str) -> Any:
    if fmt == "text":
        try:
            return payload.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise MalformedPayload(f"not UTF-8 text: {err.reason} at byte {err.start}",
                                   format=fmt, path=path) from None
    if fmt == "json":
        try:
            return json.loads(payload, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise MalformedPayload(f"not valid JSON: {err}", format=fmt, path=path) from None
    try:
        return cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError, RecursionError) as err:
        raise MalformedPayload(f"not valid CBOR: {err}", format=fmt, path=path) from None


def lookup(doc: Any, key_path: str, *, fmt: str, path: str) -> Any:
    """The value at a dotted key path. Raises MissingField naming the missing step."""
    node = doc
    for step in key_path.split("."):
        if isinstance(node, dict):
            if step in node:
                node = node[step]
                continue
            if _INT.fullmatch(step) and int(step) in node:  # CBOR maps may have int keys
                node = node[int(step)]
                continue
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
            continue
        what = "an object" if isinstance(node, dict) else _kind(node)
        raise MissingField(f"no {step!r} in {what} (field {key_path!r})", format=fmt,
                           path=path, field=key_path)
    return node


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "a byte string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


# ---- values ----------------------------------------------------------------------


def parse_number(text: str) -> int | float | None:
    """An integer or decimal number written as text, or None."""
    s = text.strip()
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        value = float(s)
        return value if math.isfinite(value) else None
    return None


def convert(point: CoapPoint, raw: Any) -> Value:
    """``raw`` as the point's value: typed, checked and scaled. Raises InvalidValue."""

    def invalid(message: str) -> InvalidValue:
        return InvalidValue(message if point.field is None else f"{point.field}: {message}",
                            format=point.format, path=point.path)

    if isinstance(raw, float) and not math.isfinite(raw):
        raise invalid(f"{raw!r} is not a finite number")
    if not isinstance(raw, (bool, int, float, str, bytes)):
        hint = " (set field to pick a value)" if isinstance(raw, (dict, list)) else ""
        raise invalid(f"expected a number, true/false or a string, got {_kind(raw)}{hint}")
    value: Value = raw
    if point.type == "number":
        if isinstance(raw, str):
            parsed = parse_number(raw)
            if parsed is None:
                raise invalid(f"expected a number, got {_shown(raw)}")
            value = parsed
        elif isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise invalid(f"expected a number, got {_kind(raw)}")
    elif point.type == "bool":
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, int) and raw in (0, 1):
            value = bool(raw)
        elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            value = raw.strip().lower() in _TRUE
        else:
            raise invalid(f"expected true or false, got {_shown(raw)}")
    elif point.type == "string":
        if not isinstance(raw, str):
            raise invalid(f"expected a string, got {_kind(raw)}")
    if point.scaled:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"scale applies to numbers, got {_kind(value)}")
        value = value * point.scale + point.offset
        if not math.isfinite(value):
            raise invalid("the scaled value is not finite")
    return value


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return _kind(value)


# ---- SenML -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One resolved SenML record: its name minus the pack's base name."""

    name: str
    value: Value
    unit: str | None
    time: int


def senml_records(payload: bytes, *, fmt: str, path: str, now_ns: int) -> list[Record]:
    """Every record of a SenML pack, base fields resolved by :func:`gatewayd.senml.decode`.

    Raises MalformedPayload for anything that is not a SenML pack.
    """
    cbor = fmt == "senml-cbor"
    pack = _parse(payload, "cbor" if cbor else "json", path)
    if not isinstance(pack, list) or not pack:
        raise MalformedPayload("a SenML pack must be a non-empty array of records",
                               format=fmt, path=path)
    if len(pack) > MAX_RECORDS:
        raise MalformedPayload(f"{len(pack)} records; at most {MAX_RECORDS} are read",
                               format=fmt, path=path)
    local = _local_names(pack, cbor=cbor, fmt=fmt, path=path)
    try:
        data = cbor2.dumps(local) if cbor else json.dumps(local).encode()
        readings = senml.decode(data, fmt="cbor" if cbor else "json", now_ns=now_ns)
    except ProtocolError as err:
        raise MalformedPayload(str(err), format=fmt, path=path) from None
    except (ValueError, TypeError, OverflowError) as err:  # a value the encoders refuse
        raise MalformedPayload(f"unsupported value: {err}", format=fmt, path=path) from None
    return [Record(r.point[len(_MARK):], r.value, r.unit, r.time)
            for r in readings]


def _local_names(pack: list[Any], *, cbor: bool, fmt: str, path: str) -> list[dict[Any, Any]]:
    """The pack with base names resolved here and every record named
    ``d/={local name}``, so that the decoder sees device ``d`` and a point."""
    bn_keys: tuple[Any, ...] = ("bn", senml.CBOR_LABELS["bn"]) if cbor else ("bn",)
    n_keys: tuple[Any, ...] = ("n", senml.CBOR_LABELS["n"]) if cbor else ("n",)
    n_label = senml.CBOR_LABELS["n"] if cbor else "n"
    current_bn = ""
    pack_bn: str | None = None
    out: list[dict[Any, Any]] = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise MalformedPayload(f"SenML record {i}: expected an object, got {_kind(rec)}",
                                   format=fmt, path=path)
        rec = dict(rec)
        for key in bn_keys:
            if key in rec:
                bn = rec.pop(key)
                if not isinstance(bn, str):
                    raise MalformedPayload(f"SenML record {i}: 'bn' must be a string",
                                           format=fmt, path=path)
                current_bn = bn
                if pack_bn is None:
                    pack_bn = bn
        name = ""
        for key in n_keys:
            if key in rec:
                n = rec.pop(key)
                if not isinstance(n, str):
                    raise MalformedPayload(f"SenML record {i}: 'n' must be a string",
                                           format=fmt, path=path)
                name = n
        full = current_bn + name
        rec[n_label] = _SENML_NAME_PREFIX + (full[len(pack_bn):] if pack_bn and
                                             full.startswith(pack_bn) else full)
        out.append(rec)
    return out


def _senml_point(point: CoapPoint, records: Sequence[Record], device: str,
                 out: Decoded) -> None:
    if point.field is not None:
        chosen = [(point.name, r) for r in records if r.name == point.field]
        if not chosen:
            out.errors.append((point.name, MissingField(
                f"no record named {point.field!r}", format=point.format, path=point.path,
                field=point.field)))
            return
    else:
        chosen = [(f"{point.name}.{r.name}" if r.name else point.name, r) for r in records]
    for name, record in chosen:
        try:
            if not POINT_NAME.fullmatch(name):
                raise InvalidValue(f"record name {record.name!r} does not make a point name "
                                   "(letters, digits, '_', '-', '.'); set field to pick one",
                                   format=point.format, path=point.path)
            value = convert(point, record.value)
        except PayloadError as err:
            out.errors.append((name, err))
            continue
        out.readings.append(Reading(device, name, value, point.unit or record.unit,
                                    record.time))


# ---- writes ----------------------------------------------------------------------


def encode_write(point: CoapPoint, value: Value, *, device: str) -> tuple[bytes, int]:
    """The PUT payload and Content-Format that write ``value`` (engineering units).

    Raises WriteRefused naming the device and point when the point is not
    writable or the value is of the wrong kind or outside the point's range.
    """

    def refuse(message: str) -> WriteRefused:
        return WriteRefused(message, device=device, point=point.name)

    rng = point.writable
    if rng is None:
        raise refuse("point is not writable")
    raw: Value
    if point.type in (None, "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise refuse(f"{value!r} is not a finite number")
        if (rng.min is not None and value < rng.min) or (rng.max is not None and value > rng.max):
            raise refuse(f"value {value:g} is out of range [{rng.min:g}, {rng.max:g}]")
        raw = _unscale(point, value) if point.scaled else value
    elif point.type == "bool":
        if isinstance(value, bool):
            raw = value
        elif isinstance(value, int) and value in (0, 1):
            raw = bool(value)
        else:
            raise refuse(f"expected true or false, got {value!r}")
    else:
        if not isinstance(value, str):
            raise refuse(f"expected a string, got {value!r}")
        raw = value
    return _encode(point, raw), CONTENT_FORMATS[point.format]


def _unscale(point: CoapPoint, value: float) -> int | float:
    """The raw value that scales to ``value``, to 12 significant digits; a whole
    number is sent as an integer (``25 / 0.1`` is ``250``, not ``250.0``)."""
    raw = float(f"{(value - point.offset) / point.scale:.12g}")
    return int(raw) if raw.is_integer() else raw


def _encode(point: CoapPoint, raw: Value) -> bytes:
    fmt = point.format
    if fmt == "text":
        if isinstance(raw, bool):
            return b"true" if raw else b"false"
        if isinstance(raw, float):
            return repr(raw).encode()
        return str(raw).encode()
    if fmt in SENML_FORMATS:
        cbor = fmt == "senml-cbor"
        key = "vb" if isinstance(raw, bool) else "vs" if isinstance(raw, str) else "v"
        record: dict[str, Any] = {"n": point.field, key: raw}
        if point.unit is not None:
            record["u"] = point.unit
        if cbor:
            return bytes(cbor2.dumps([{senml.CBOR_LABELS[k]: v for k, v in record.items()}]))
        return json.dumps([record], separators=(",", ":")).encode()
    body: Any = raw
    if point.field is not None:
        for step in reversed(point.field.split(".")):
            body = {step: body}
    if fmt == "cbor":
        return bytes(cbor2.dumps(body))
    return json.dumps(body, separators=(",", ":")).encode()
