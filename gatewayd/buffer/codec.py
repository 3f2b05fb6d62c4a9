"""How a Reading's value is stored in SQLite and read back, exactly. Pure functions.

The ``v`` column is ``ANY`` in a STRICT table, so SQLite keeps INTEGER, REAL,
TEXT and BLOB exactly as bound. What SQLite cannot hold is recorded in the
series ``kind``:

- ``KIND_BOOL``: bools are stored as 0/1 and come back as bool;
- ``KIND_BIGINT``: ints outside 64 bits are stored as decimal text;
- a NaN float is stored by SQLite as NULL; NULL comes back as NaN (a value
  is never None otherwise).
"""

from __future__ import annotations

import math
from typing import Any

from gatewayd.reading import Value

KIND_PLAIN = 0
KIND_BOOL = 1
KIND_BIGINT = 2

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Estimated bytes of one row on disk besides a text or blob value: cell
# pointer, record header, row id, series id, 8-byte time, 8-byte value.
ROW_BYTES = 32


def encode_value(value: object) -> tuple[int, Any, int] | None:
    """``(kind, stored value, estimated row bytes)``, or None when the value is not storable.

    Accepts subclasses of the Value types (IntEnum, numpy floats, bytearray)
    and stores them as the base type.
    """
    if isinstance(value, bool):
        return KIND_BOOL, int(value), ROW_BYTES
    if isinstance(value, int):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            return KIND_PLAIN, number, ROW_BYTES
        text = str(number)
        return KIND_BIGINT, text, ROW_BYTES + len(text)
    if isinstance(value, float):
        return KIND_PLAIN, float(value), ROW_BYTES
    if isinstance(value, str):
        text = str(value)
        return KIND_PLAIN, text, ROW_BYTES + len(text)
    if isinstance(value, (bytes, bytearray, memoryview)):
        blob = bytes(value)
        return KIND_PLAIN, blob, ROW_BYTES + len(blob)
    return None


def decode_value(kind: int, stored: Any) -> Value:
    """The value that ``encode_value`` stored as ``(kind, stored)``."""
    if kind == KIND_BOOL:
        return bool(stored)
    if kind == KIND_BIGINT:
        return int(stored)
    if stored is None:
        return math.nan
    value: Value = stored
    return value


def time_ok(t: object) -> bool:
    """True when ``t`` is a storable time: an int within 64 bits (ns since the epoch)."""
    return type(t) is int and INT64_MIN <= t <= INT64_MAX


def text_storable(value: Any) -> bool:
    """False for a str SQLite cannot take (lone surrogates do not encode to UTF-8)."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
