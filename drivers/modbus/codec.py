"""Pure conversion between Modbus registers and point values: no I/O, no clock.

A register is a 16-bit unsigned integer as it travels in a Modbus PDU. A value
of N registers is decoded by first putting its bytes in big-endian order
(``ABCD``) according to the point's ``order``, then reading them as the type:

- ``ABCD``: registers in order, high byte first (the Modbus standard);
- ``CDAB``: the register (word) order is reversed;
- ``BADC``: the two bytes of each register are swapped;
- ``DCBA``: both (fully little-endian).

The rule is the same for every width (16, 32, 64 bits and strings), so
``CDAB`` on a 64-bit value reverses all four registers.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gatewayd.errors import ProtocolError

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
NUMERIC_TYPES = (
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
)
TYPE_NAMES = (*NUMERIC_TYPES, "bool", "string(n)")
MAX_STRING_LENGTH = 250  # bytes: 125 registers, the most one read request returns

_INT_WIDTHS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
_FLOAT_FORMATS = {"float32": ">f", "float64": ">d"}
_STRING = re.compile(r"string\((\d+)\)")

RegisterValue = int | float | bool | str


@dataclass(frozen=True)
class ValueType:
    """A point's data type; ``length`` is the byte length of a ``string(n)``."""

    name: str
    length: int = 0

    @property
    def registers(self) -> int:
        """How many registers a value of this type occupies."""
        if self.name == "string":
            return (self.length + 1) // 2
        if self.name == "bool":
            return 1
        if self.name in _FLOAT_FORMATS:
            return 4 if self.name == "float64" else 2
        return _INT_WIDTHS[self.name] // 16

    @property
    def is_numeric(self) -> bool:
        return self.name in NUMERIC_TYPES

    @property
    def is_integer(self) -> bool:
        return self.name in _INT_WIDTHS

    def __str__(self) -> str:
        return f"string({self.length})" if self.name == "string" else self.name


def parse_type(text: str) -> ValueType:
    """``"float32"`` or ``"string(12)"`` as a ValueType.

    Raises ValueError naming the accepted forms when the text is not a type.
    """
    if text in NUMERIC_TYPES or text == "bool":
        return ValueType(text)
    m = _STRING.fullmatch(text)
    if m is None:
        raise ValueError(f"unknown type {text!r}; expected one of {', '.join(TYPE_NAMES)}")
    length = int(m.group(1))
    if not 1 <= length <= MAX_STRING_LENGTH:
        raise ValueError(
            f"invalid length in {text!r}; expected string(n) with n from 1 to "
            f"{MAX_STRING_LENGTH}")
    return ValueType("string", length)


def int_range(vtype: ValueType) -> tuple[int, int]:
    """The smallest and largest raw integer of an integer type."""
    bits = _INT_WIDTHS[vtype.name]
    if vtype.name.startswith("u"):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


# ---- register <-> byte order -------------------------------------------------


def registers_to_bytes(registers: Sequence[int], order: str) -> bytes:
    """The bytes of ``registers`` in big-endian (ABCD) order.

    Raises ProtocolError when a register is not a 16-bit unsigned integer.
    """
    words = list(registers)
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ProtocolError(f"register value {word} is not a 16-bit unsigned integer")
    if order in ("CDAB", "DCBA"):
        words.reverse()
    byteorder: Literal["little", "big"] = "little" if order in ("BADC", "DCBA") else "big"
    return b"".join(w.to_bytes(2, byteorder) for w in words)


def bytes_to_registers(data: bytes, order: str) -> list[int]:
    """The registers that carry big-endian ``data`` (even length) in ``order``."""
    byteorder: Literal["little", "big"] = "little" if order in ("BADC", "DCBA") else "big"
    words = [int.from_bytes(data[i:i + 2], byteorder) for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    return words


# ---- values ------------------------------------------------------------------


def decode(registers: Sequence[int], vtype: ValueType, order: str = "ABCD") -> RegisterValue:
    """The raw value (before scale and offset) held in ``registers``.

    Raises ProtocolError when the register count does not match the type.
    """
    if len(registers) != vtype.registers:
        raise ProtocolError(
            f"{vtype} needs {vtype.registers} registers, got {len(registers)}")
    data = registers_to_bytes(registers, order)
    if vtype.name == "bool":
        return data != b"\x00\x00"
    if vtype.name == "string":
        return data[:vtype.length].rstrip(b"\x00").decode("utf-8", errors="replace")
    fmt = _FLOAT_FORMATS.get(vtype.name)
    if fmt is not None:
        return float(struct.unpack(fmt, data)[0])
    return int.from_bytes(data, "big", signed=not vtype.name.startswith("u"))


def encode(value: RegisterValue, vtype: ValueType, order: str = "ABCD") -> list[int]:
    """The registers that carry the raw ``value`` of type ``vtype`` in ``order``.

    Raises ValueError when the value is of the wrong kind or does not fit the type.
    """
    if vtype.name == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false for bool, got {value!r}")
        data = b"\x00\x01" if value else b"\x00\x00"
    elif vtype.name == "string":
        if not isinstance(value, str):
            raise ValueError(f"expected a string for {vtype}, got {value!r}")
        raw = value.encode("utf-8")
        if len(raw) > vtype.length:
            raise ValueError(f"string of {len(raw)} bytes does not fit {vtype}")
        data = raw.ljust(vtype.registers * 2, b"\x00")
    elif vtype.name in _FLOAT_FORMATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number for {vtype}, got {value!r}")
        try:
            data = struct.pack(_FLOAT_FORMATS[vtype.name], value)
        except (OverflowError, struct.error) as err:
            raise ValueError(f"{value!r} does not fit {vtype}") from err
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer for {vtype}, got {value!r}")
        lo, hi = int_range(vtype)
        if not lo <= value <= hi:
            raise ValueError(f"{value} does not fit {vtype} ({lo} to {hi})")
        data = value.to_bytes(vtype.registers * 2, "big", signed=lo < 0)
    return bytes_to_registers(data, order)


def decode_bit(register: int, bit: int) -> bool:
    """Bit ``bit`` (0 = least significant) of a 16-bit register."""
    if not 0 <= register <= 0xFFFF:
        raise ProtocolError(f"register value {register} is not a 16-bit unsigned integer")
    return bool((register >> bit) & 1)


# ---- engineering units -------------------------------------------------------


def scale_value(raw: RegisterValue, scale: float, offset: float) -> RegisterValue:
    """``raw * scale + offset``; integers stay integers when scale is 1 and offset 0."""
    if isinstance(raw, (bool, str)):
        return raw
    if scale == 1.0 and offset == 0.0:
        return raw
    return raw * scale + offset


def unscale_value(value: float, vtype: ValueType, scale: float, offset: float) -> int | float:
    """The raw value that ``scale_value`` turns into ``value``.

    Integer types are rounded to the nearest raw step. Raises ValueError when
    the value is not finite or the raw value does not fit the type.
    """
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    raw = (value - offset) / scale
    if vtype.is_integer:
        rounded = round(raw)
        lo, hi = int_range(vtype)
        if not lo <= rounded <= hi:
            raise ValueError(f"raw value {rounded} does not fit {vtype} ({lo} to {hi})")
        return rounded
    return raw
