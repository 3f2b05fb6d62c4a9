"""Checksums used by serial devices: pure functions over bytes, no I/O.

Every kind has a fixed width in bytes and a function from the covered bytes to
an unsigned integer. :class:`ChecksumError` is the one error a bad checksum
raises (a :class:`~gatewayd.errors.ProtocolError`), carrying both values.

Check values (the catalogue's ``check`` over ``b"123456789"``):

- ``crc16-modbus``: 0x4B37 (poly 0x8005 reflected, init 0xFFFF); sent low byte first;
- ``crc8``: 0xF4 (CRC-8/SMBUS: poly 0x07, init 0x00, not reflected);
- ``crc8-maxim``: 0xA1 (CRC-8/MAXIM-DOW, the Dallas 1-Wire CRC: poly 0x31 reflected);
- ``xor``: 0x31 (XOR of every byte, as in NMEA 0183);
- ``sum8``: 0xDD (sum of every byte modulo 256);
- ``sum16``: 0x01DD (sum of every byte modulo 65536).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.errors import ProtocolError


class ChecksumError(ProtocolError):
    """A message's checksum does not match its content."""

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


def _crc16_modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _crc8_table(poly: int, *, reflected: bool) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            if reflected:
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
            else:
                crc = ((crc << 1) ^ poly if crc & 0x80 else crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC16_MODBUS = _crc16_modbus_table()
_CRC8_SMBUS = _crc8_table(0x07, reflected=False)
_CRC8_MAXIM = _crc8_table(0x8C, reflected=True)  # 0x31 reflected


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (transmitted low byte first)."""
    crc = 0xFFFF
    table = _CRC16_MODBUS
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS of ``data``: polynomial 0x07, initial value 0, no reflection."""
    crc = 0
    table = _CRC8_SMBUS
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def crc8_maxim(data: bytes) -> int:
    """CRC-8/MAXIM-DOW (Dallas/Maxim 1-Wire) of ``data``."""
    crc = 0
    table = _CRC8_MAXIM
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def xor8(data: bytes) -> int:
    """The XOR of every byte of ``data`` (the NMEA 0183 checksum)."""
    acc = 0
    for byte in data:
        acc ^= byte
    return acc


def sum8(data: bytes) -> int:
    """The sum of every byte of ``data`` modulo 256."""
    return sum(data) & 0xFF


def sum16(data: bytes) -> int:
    """The sum of every byte of ``data`` modulo 65536."""
    return sum(data) & 0xFFFF


@dataclass(frozen=True)
class ChecksumKind:
    """One checksum algorithm: its name, width on the wire and function."""

    name: str
    size: int  # bytes on the wire
    compute: Callable[[bytes], int]
    default_order: str  # "big" | "little": byte order on the wire when size > 1


KINDS: dict[str, ChecksumKind] = {
    k.name: k
    for k in (
        ChecksumKind("crc16-modbus", 2, crc16_modbus, "little"),
        ChecksumKind("crc8", 1, crc8, "big"),
        ChecksumKind("crc8-maxim", 1, crc8_maxim, "big"),
        ChecksumKind("xor", 1, xor8, "big"),
        ChecksumKind("sum8", 1, sum8, "big"),
        ChecksumKind("sum16", 2, sum16, "big"),
    )
}
