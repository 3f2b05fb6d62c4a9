"""The whole byte-to-point pipeline of each protocol, with every outcome counted exactly."""

from __future__ import annotations

from typing import Any

import pytest
from gatewayd.drivers.serial.checksums import crc16_modbus
from gatewayd.drivers.serial.codec import build_codec
from gatewayd.drivers.serial.nmea import KNOT, format_sentence
from gatewayd.drivers.serial.parsers import Point
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.properties import examples

from .support import CAPTURES, options

NMEA = {"port": "/dev/null", "protocol": "nmea"}
SCALE = {"port": "/dev/null", "protocol": "lines", "parser": "regex",
         "pattern": r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)kg",
         "fields": [{"name": "weight", "unit": "kg"}, {"name": "status", "type": "string"}]}
METER = {"port": "/dev/null", "protocol": "frames",
         "frame": {"start": "AA 55", "length": {"at": 2}, "checksum": {"kind": "crc16-modbus",
                                                                       "from": 2}},
         "fields": [{"name": "power", "at": 3, "type": "int32", "unit": "W"},
                    {"name": "voltage", "at": 7, "type": "uint16", "scale": 0.1, "unit": "V"}]}


def meter_frame(power: int, decivolts: int) -> bytes:
    body = bytes([6]) + power.to_bytes(4, "big", signed=True) + decivolts.to_bytes(2, "big")
    return b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")


def flat(records: list[list[Point]]) -> list[Point]:
    return [p for r in records for p in r]


def test_nmea_capture_with_line_noise() -> None:
    codec = build_codec(options(NMEA))
    capture = (CAPTURES / "ublox_m8_drive.nmea").read_bytes()
    noise = (b"\x00\xff\xfe garbage at the wrong baud rate\r\n"            # parse error
             + format_sentence("GPGGA,1,2,3")[:-4] + b"00\r\n"             # checksum error
             + b"$GPGGA," + b"9" * 300 + b"\r\n"                          # oversize
             + b"$GPRMC,083559.00,A,4717.11437,N")  # cut short: no checksum, parse error
    records = codec.feed(noise[:-30]) + codec.feed(noise[-30:]) + codec.feed(b"\r\n" + capture)
    assert len(records) == 48
    points = flat(records)
    assert len(points) == 88
    assert points[:4] == [Point("latitude", 47 + 17.11437 / 60, "lat"),
                          Point("longitude", 8 + 33.91522 / 60, "lon"),
                          Point("speed", 12.3 * KNOT, "m/s"), Point("course", 52.1, "deg")]
    stats = codec.stats()
    assert stats == {
        "bytes_in": len(noise) + 2 + len(capture), "lines_ok": 48, "frames_ok": 0,
        "checksum_errors": 1, "parse_errors": 2, "ignored": 35, "oversize_discarded": 1,
        "length_errors": 0, "end_errors": 0, "discarded_bytes": 7 + 300 + 2,
    }
    assert codec.errors == 4
    assert codec.last_error is not None


def test_polled_scale_lines() -> None:
    codec = build_codec(options(SCALE))
    records = codec.feed(b"ST,GS,+0012.34kg\r\nUS,GS,-0000.50kg\r\nOL,GS,+9999.99\r\n")
    assert records == [[Point("weight", 12.34, "kg"), Point("status", "ST", None)],
                       [Point("weight", -0.5, "kg"), Point("status", "US", None)]]
    assert codec.stats()["lines_ok"] == 2
    assert codec.stats()["parse_errors"] == 1
    assert codec.last_error == "line does not match the pattern"


def test_binary_meter_frames() -> None:
    codec = build_codec(options(METER))
    bad = bytearray(meter_frame(5, 2301))
    bad[-1] ^= 0xFF
    data = b"\x13\x37" + meter_frame(-1500, 2304) + bytes(bad) + meter_frame(2000, 2299)
    records = codec.feed(data)
    assert records == [[Point("power", -1500, "W"), Point("voltage", 2304 * 0.1, "V")],
                       [Point("power", 2000, "W"), Point("voltage", 2299 * 0.1, "V")]]
    stats = codec.stats()
    assert (stats["frames_ok"], stats["checksum_errors"], stats["discarded_bytes"]) \
        == (2, 1, 2 + len(bad))


def test_reset_forgets_the_partial_record() -> None:
    codec = build_codec(options(SCALE))
    assert codec.feed(b"ST,GS,+00") == []
    assert codec.reset() == 9
    assert codec.feed(b"12.34kg\r\nST,GS,+0001.00kg\r\n") == [
        [Point("weight", 1.0, "kg"), Point("status", "ST", None)]]
    assert codec.stats()["parse_errors"] == 1  # the tail of the stale reply


CONFIGS: list[dict[str, Any]] = [
    NMEA, SCALE, METER,
    {"port": "/dev/null", "protocol": "lines", "parser": "json", "max_line": 64},
    {"port": "/dev/null", "protocol": "lines", "parser": "kv", "terminator": "\\r"},
    {"port": "/dev/null", "protocol": "lines", "parser": "csv",
     "fields": [{"name": "a", "column": 1, "type": "int"}]},
]


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(range(len(CONFIGS))),
       st.lists(st.one_of(st.binary(max_size=64),
                          st.sampled_from([b"\r\n", b"\n", b"$GPGGA,", b"\xaa\x55\x06", b"=1,",
                                           b"{\"a\": 1}", format_sentence("GNGSA,A,3,,,,,,,,,"
                                                                          ",,,,1,2,3")])),
                max_size=30))
def test_any_byte_stream_is_counted_never_raised(which: int, chunks: list[bytes]) -> None:
    codec = build_codec(options(CONFIGS[which]))
    total = 0
    for chunk in chunks:
        records = codec.feed(chunk)
        total += len(records)
    stats = codec.stats()
    assert stats["bytes_in"] == sum(map(len, chunks))
    assert stats["lines_ok"] + stats["frames_ok"] == total == codec.records_ok
