"""Characteristic values of GATT devices: a declared struct layout, no I/O.

A layout is a :mod:`struct` format holding exactly one value (``"<h"`` a
little-endian int16, ``"<2xB"`` the third byte of a value), or ``"utf8"`` (the
whole value as text) or ``"bytes"`` (the whole value, raw). Numbers are scaled:
``value = raw * scale + offset``; integers stay integers unless ``scale`` or
``offset`` is set.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from gatewayd.reading import Value

from .errors import InvalidField, TruncatedPayload

FORMAT = "gatt"
TEXT_LAYOUTS = ("utf8", "bytes")
_INTEGER_CODES = set("bBhHiIlLqQ")
_FLOAT_CODES = set("efd")
_BOOL_CODES = {"?"}


@dataclass(frozen=True, slots=True)
class Layout:
    """How one characteristic value is laid out and scaled."""

    text: str  # the struct format, or utf8 / bytes
    scale: float = 1.0
    offset: float = 0.0

    @property
    def code(self) -> str:
        """The struct type code of the value (``h``, ``f``...), or the text layout."""
        if self.text in TEXT_LAYOUTS:
            return self.text
        return next(c for c in self.text if c.isalpha() and c != "x")

    @property
    def is_numeric(self) -> bool:
        return self.code in _INTEGER_CODES or self.code in _FLOAT_CODES

    @property
    def size(self) -> int | None:
        return None if self.text in TEXT_LAYOUTS else struct.calcsize(self.text)


def check_layout(text: str) -> str:
    """``text`` when it is a usable layout. Raises ValueError saying what is expected."""
    if text in TEXT_LAYOUTS:
        return text
    try:
        compiled = struct.Struct(text)
    except struct.error as err:
        raise ValueError(f"invalid struct layout {text!r} ({err}); expected a Python struct "
                         "format with one value such as '<h', '<H', '<f' or '<2xB', "
                         "or 'utf8' or 'bytes'") from None
    fields = len(compiled.unpack(bytes(compiled.size)))
    codes = [c for c in text if c.isalpha() and c != "x"]
    if fields != 1 or len(codes) != 1 or codes[0] in ("s", "p", "c", "n", "N", "P"):
        raise ValueError(f"struct layout {text!r} holds {fields} values; expected exactly one "
                         "number or bool (skip bytes with 'x': '<2xB')")
    return text


def decode_value(layout: Layout, data: bytes) -> Value:
    """The characteristic's value. Raises TruncatedPayload or InvalidField."""
    raw_bytes = bytes(data)
    if layout.text == "bytes":
        return raw_bytes
    if layout.text == "utf8":
        try:
            return raw_bytes.decode("utf-8").rstrip("\x00")
        except UnicodeDecodeError:
            raise InvalidField("value is not UTF-8", format=FORMAT) from None
    size = layout.size
    assert size is not None
    if len(raw_bytes) < size:
        raise TruncatedPayload(f"value of {len(raw_bytes)} bytes; layout {layout.text!r} needs "
                               f"{size}", format=FORMAT)
    (raw,) = struct.unpack_from(layout.text, raw_bytes)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidField(f"value is {raw!r}", format=FORMAT)
    if layout.scale == 1.0 and layout.offset == 0.0:
        return raw  # type: ignore[no-any-return]
    # round off the binary noise of the scaling (1999 * 0.01 is 19.990000000000002)
    return round(float(raw) * layout.scale + layout.offset, 10)


def encode_value(layout: Layout, value: Value) -> bytes:
    """The bytes that write ``value``. Raises ValueError when it does not fit."""
    if layout.text == "bytes":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str):
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise ValueError("expected hex digits for a bytes characteristic") from None
        raise ValueError(f"expected bytes or a hex string, got {value!r}")
    if layout.text == "utf8":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value.encode("utf-8")
    code = layout.code
    if code in _BOOL_CODES:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return struct.pack(layout.text, bool(value))
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    raw: float | int = (value - layout.offset) / layout.scale
    if code in _INTEGER_CODES:
        raw = round(raw)
    try:
        return struct.pack(layout.text, raw)
    except struct.error:
        raise ValueError(f"value {value!r} does not fit layout {layout.text!r}") from None
