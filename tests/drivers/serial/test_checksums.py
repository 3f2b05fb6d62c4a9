"""Checksums: catalogue check values, real device frames, algebraic properties."""

from __future__ import annotations

import pytest
from gatewayd.drivers.serial.checksums import (
    KINDS,
    crc8,
    crc8_maxim,
    crc16_modbus,
    sum8,
    sum16,
    xor8,
)
from hypothesis import given
from hypothesis import strategies as st

CHECK = b"123456789"


@pytest.mark.parametrize(("name", "expected"), [
    ("crc16-modbus", 0x4B37),
    ("crc8", 0xF4),
    ("crc8-maxim", 0xA1),
    ("xor", 0x31),
    ("sum8", 0xDD),
    ("sum16", 0x01DD),
])
def test_catalogue_check_values(name: str, expected: int) -> None:
    assert KINDS[name].compute(CHECK) == expected


def test_crc16_modbus_of_real_requests() -> None:
    # Read holding registers 0..9 of slave 1: 01 03 00 00 00 0A C5 CD on the wire.
    assert crc16_modbus(bytes.fromhex("01030000000A")) == 0xCDC5
    # Read input register 1 of slave 17: 11 04 00 01 00 01 62 9A (low byte first).
    assert crc16_modbus(bytes.fromhex("110400010001")).to_bytes(2, "little") == b"\x62\x9a"


def test_crc8_maxim_of_a_ds18b20_rom_code() -> None:
    # A DS18B20 ROM code: family 28, serial, then the CRC of the first 7 bytes.
    rom = bytes.fromhex("28FF4C6A641603")
    assert crc8_maxim(rom + bytes([crc8_maxim(rom)])) == 0


def test_xor_is_the_nmea_checksum() -> None:
    body = b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert xor8(body) == 0x47


def test_empty_input() -> None:
    assert (crc16_modbus(b""), crc8(b""), crc8_maxim(b""), xor8(b""), sum8(b""), sum16(b"")) \
        == (0xFFFF, 0, 0, 0, 0, 0)


@pytest.mark.property
@given(st.binary(max_size=300))
def test_appending_the_crc16_gives_a_zero_residue(data: bytes) -> None:
    framed = data + crc16_modbus(data).to_bytes(2, "little")
    assert crc16_modbus(framed) == 0


@pytest.mark.property
@given(st.binary(max_size=300))
def test_appending_the_crc8_gives_zero(data: bytes) -> None:
    assert crc8(data + bytes([crc8(data)])) == 0
    assert crc8_maxim(data + bytes([crc8_maxim(data)])) == 0
    assert xor8(data + bytes([xor8(data)])) == 0


@pytest.mark.property
@given(st.binary(max_size=300), st.integers(0, 299), st.integers(1, 255))
def test_a_single_byte_error_is_always_caught_by_the_crcs(data: bytes, at: int, flip: int) -> None:
    if not data:
        return
    at %= len(data)
    bad = bytearray(data)
    bad[at] ^= flip
    assert crc16_modbus(bytes(bad)) != crc16_modbus(data)
    assert crc8(bytes(bad)) != crc8(data)
    assert crc8_maxim(bytes(bad)) != crc8_maxim(data)


@pytest.mark.property
@given(st.binary(max_size=300))
def test_every_kind_fits_its_width(data: bytes) -> None:
    for kind in KINDS.values():
        assert 0 <= kind.compute(data) < 256 ** kind.size
