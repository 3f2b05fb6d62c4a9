"""Record parsers: one line or frame in, typed named values out. Pure, no I/O.

Line parsers (``json``, ``csv``, ``kv``, ``regex``) read text; :class:`FrameParser`
reads fixed positions of a binary frame. Each configured :class:`FieldSpec`
says where its value is, its type, and a linear conversion
``value * scale + offset`` (a scaled value is a float). Every parser raises
ProtocolError, and nothing else, for any input it cannot use.
"""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from gatewayd.errors import ProtocolError
from gatewayd.reading import Value

TEXT_TYPES = ("float", "int", "bool", "string")
BINARY_FORMATS = {
    "uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "uint32": "I", "int32": "i",
    "uint64": "Q", "int64": "q", "float32": "f", "float64": "d",
}
BINARY_TYPES = (*BINARY_FORMATS, "bool")
NUMERIC_TYPES = ("float", "int", *BINARY_FORMATS)

_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"1", "true", "on", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "off", "no", "n", "f"})
_KV_SPLIT = re.compile(r"[,;\s]+")
MAX_AUTO_POINTS = 64  # points taken from one line when no fields are configured


class Point(NamedTuple):
    """One decoded value, ready to become a Reading."""

    name: str
    value: Value
    unit: str | None


@dataclass(frozen=True)
class FieldSpec:
    """Where one point's value is in a record, its type and conversion.

    Exactly one locator is used, by parser: ``key`` (json: a dotted path; kv),
    ``column`` (csv, from 0), ``group`` (regex; the field name by default), ``at``
    (frames: the byte offset from the first start byte, with ``endian``; ``bit``
    picks one bit of a ``bool``). A field that is absent from a record makes
    the record an error unless ``optional``.
    """

    name: str
    type: str = "float"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    key: str | None = None
    column: int | None = None
    group: str | None = None
    at: int | None = None
    endian: str = "big"
    bit: int | None = None
    optional: bool = False

    @property
    def linear(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0


def _finite(field: FieldSpec, value: float) -> float:
    if not math.isfinite(value):
        raise ProtocolError(f"field {field.name!r}: value is not finite")
    return value


def apply_scale(field: FieldSpec, value: int | float) -> int | float:
    """``value * scale + offset``; the value itself when no conversion is set."""
    if not field.linear:
        return _finite(field, value) if isinstance(value, float) else value
    return _finite(field, float(value) * field.scale + field.offset)


def convert_text(field: FieldSpec, raw: str) -> Value:
    """A text value converted to the field's type. Raises ProtocolError."""
    text = raw.strip()
    if field.type == "string":
        return raw
    if field.type == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ProtocolError(f"field {field.name!r}: invalid boolean {text[:32]!r}")
    if field.type == "int":
        if not _INT.fullmatch(text):
            raise ProtocolError(f"field {field.name!r}: invalid integer {text[:32]!r}")
        return apply_scale(field, int(text))
    if not _FLOAT.fullmatch(text):
        raise ProtocolError(f"field {field.name!r}: invalid number {text[:32]!r}")
    return apply_scale(field, float(text))


def convert_json(field: FieldSpec, raw: object) -> Value:
    """A JSON value converted to the field's type. Raises ProtocolError."""
    if isinstance(raw, str):
        return convert_text(field, raw)
    if field.type == "string":
        raise ProtocolError(f"field {field.name!r}: expected a string")
    if field.type == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise ProtocolError(f"field {field.name!r}: expected a boolean")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ProtocolError(f"field {field.name!r}: expected a number")
    if field.type == "int":
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ProtocolError(f"field {field.name!r}: expected an integer, got {raw!r}")
            raw = int(raw)
        return apply_scale(field, raw)
    return apply_scale(field, float(raw))


def infer_text(raw: str) -> Value:
    """The value of an unconfigured text field: int, float or the string itself."""
    text = raw.strip()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    return text


def _decode(line: bytes, encoding: str) -> str:
    try:
        return line.decode(encoding)
    except UnicodeDecodeError as err:
        raise ProtocolError(f"line is not valid {encoding}") from err


def _auto_name(name: str) -> bool:
    return bool(name) and "/" not in name and len(name) <= 64


class RecordParser(Protocol):
    """What every parser offers."""

    def parse(self, record: bytes) -> list[Point]: ...


def _collect(fields: Sequence[FieldSpec], lookup: Any, convert: Any) -> list[Point]:
    """Each field's value found by ``lookup(field)`` (None = absent) and converted."""
    out: list[Point] = []
    for field in fields:
        raw = lookup(field)
        if raw is None:
            if field.optional:
                continue
            raise ProtocolError(f"field {field.name!r} is missing")
        out.append(Point(field.name, convert(field, raw), field.unit))
    return out


class JsonLineParser:
    """One JSON object per line. Without fields, every top-level scalar is a point."""

    def __init__(self, fields: Sequence[FieldSpec] = (), *, encoding: str = "utf-8") -> None:
        self.fields = tuple(fields)
        self.encoding = encoding

    def parse(self, record: bytes) -> list[Point]:
        text = _decode(record, self.encoding)
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as err:
            raise ProtocolError(f"invalid JSON: {str(err)[:80]}") from err
        if not isinstance(obj, dict):
            raise ProtocolError("expected a JSON object")
        if not self.fields:
            return self._auto(obj)
        return _collect(self.fields, lambda f: _json_path(obj, f.key or f.name), convert_json)

    @staticmethod
    def _auto(obj: dict[str, Any]) -> list[Point]:
        out: list[Point] = []
        for key, raw in obj.items():
            if len(out) >= MAX_AUTO_POINTS:
                break
            if not _auto_name(key) or raw is None or isinstance(raw, (dict, list)):
                continue
            if isinstance(raw, float) and not math.isfinite(raw):
                continue
            out.append(Point(key, raw, None))
        return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _json_path(obj: object, path: str) -> object:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


class CsvLineParser:
    """Delimited values; each field names its ``column`` (from 0)."""

    def __init__(self, fields: Sequence[FieldSpec], *, delimiter: str = ",",
                 encoding: str = "utf-8") -> None:
        self.fields = tuple(fields)
        self.delimiter = delimiter
        self.encoding = encoding

    def parse(self, record: bytes) -> list[Point]:
        text = _decode(record, self.encoding)
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter, strict=True))
        except csv.Error as err:
            raise ProtocolError(f"invalid CSV: {err}") from err
        row = rows[0] if rows else []

        def column(field: FieldSpec) -> str | None:
            i = field.column if field.column is not None else -1
            return row[i] if 0 <= i < len(row) else None

        return _collect(self.fields, column, convert_text)


class KvLineParser:
    """``key=value`` pairs. Pairs are split at ``separator`` (by default at commas,
    semicolons and white space); tokens without ``assign`` are ignored. Without
    fields, every pair is a point with an inferred type."""

    def __init__(self, fields: Sequence[FieldSpec] = (), *, separator: str | None = None,
                 assign: str = "=", encoding: str = "utf-8") -> None:
        self.fields = tuple(fields)
        self.separator = separator
        self.assign = assign
        self.encoding = encoding

    def pairs(self, text: str) -> dict[str, str]:
        tokens = _KV_SPLIT.split(text) if self.separator is None else text.split(self.separator)
        found: dict[str, str] = {}
        for token in tokens:
            key, sep, value = token.partition(self.assign)
            if sep and key.strip():
                found[key.strip()] = value.strip()
        return found

    def parse(self, record: bytes) -> list[Point]:
        found = self.pairs(_decode(record, self.encoding))
        if not found:
            raise ProtocolError(f"no key{self.assign}value pairs")
        if not self.fields:
            return [Point(k, infer_text(v), None) for k, v in found.items()
                    if _auto_name(k)][:MAX_AUTO_POINTS]
        return _collect(self.fields, lambda f: found.get(f.key or f.name), convert_text)


class RegexLineParser:
    """A regular expression with named groups, searched in each line; each field
    takes the group of its ``group`` (or its name)."""

    def __init__(self, pattern: re.Pattern[str], fields: Sequence[FieldSpec], *,
                 encoding: str = "utf-8") -> None:
        self.pattern = pattern
        self.fields = tuple(fields)
        self.encoding = encoding

    def parse(self, record: bytes) -> list[Point]:
        text = _decode(record, self.encoding)
        m = self.pattern.search(text)
        if m is None:
            raise ProtocolError("line does not match the pattern")
        groups = m.groupdict()
        return _collect(self.fields, lambda f: groups.get(f.group or f.name), convert_text)


class FrameParser:
    """Values at fixed byte offsets of a binary frame."""

    def __init__(self, fields: Sequence[FieldSpec]) -> None:
        self.fields = tuple(fields)

    def parse(self, record: bytes) -> list[Point]:
        return _collect(self.fields, lambda f: _frame_bytes(record, f), _convert_binary)


def binary_size(type_name: str) -> int:
    """Bytes a binary field type occupies."""
    return 1 if type_name == "bool" else struct.calcsize(BINARY_FORMATS[type_name])


def _frame_bytes(frame: bytes, field: FieldSpec) -> bytes | None:
    at = field.at or 0
    size = binary_size(field.type)
    return frame[at:at + size] if at + size <= len(frame) else None


def _convert_binary(field: FieldSpec, raw: bytes) -> Value:
    if field.type == "bool":
        byte = raw[0]
        return bool(byte >> field.bit & 1) if field.bit is not None else byte != 0
    order = "<" if field.endian == "little" else ">"
    (value,) = struct.unpack(order + BINARY_FORMATS[field.type], raw)
    return apply_scale(field, value)

