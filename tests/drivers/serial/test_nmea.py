"""NMEA 0183: checksums, every supported sentence, fix epochs, captures, fuzzing."""

from __future__ import annotations

import pytest
from gatewayd.drivers.serial.checksums import ChecksumError
from gatewayd.drivers.serial.nmea import (
    KNOT,
    POINTS,
    NmeaDecoder,
    Sentence,
    format_sentence,
    parse_sentence,
    sentence_points,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.errors import ProtocolError
from tests.support.properties import examples

from .support import CAPTURES, ublox_epoch

GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
LAT = 48 + 7.038 / 60
LON = 11 + 31.0 / 60


def points(line: bytes | str) -> dict[str, float | int] | None:
    return sentence_points(parse_sentence(line))


# ---- sentences ----------------------------------------------------------------


def test_parse_the_classic_examples() -> None:
    s = parse_sentence(GGA)
    assert (s.talker, s.type, s.fields[:3]) == ("GP", "GGA", ("123519", "4807.038", "N"))
    assert len(s.fields) == 14
    assert parse_sentence(RMC + b"\r\n").type == "RMC"


def test_wrong_checksum_is_a_checksum_error_with_both_values() -> None:
    with pytest.raises(ChecksumError) as info:
        parse_sentence(GGA[:-2] + b"48")
    assert (info.value.expected, info.value.actual) == (0x48, 0x47)
    assert str(info.value) == "NMEA checksum mismatch: sentence says 48, content gives 47"


def test_lower_case_checksum_and_garbage_before_the_dollar() -> None:
    assert parse_sentence(b"\x00\xff#garbage" + GGA).type == "GGA"
    assert RMC.endswith(b"*6A")
    assert parse_sentence(RMC[:-2] + b"6a").type == "RMC"


def test_missing_checksum() -> None:
    body = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    with pytest.raises(ProtocolError, match="without checksum"):
        parse_sentence(body)
    assert parse_sentence(body, require_checksum=False).type == "GGA"


@pytest.mark.parametrize(("line", "message"), [
    (b"GPGGA,1,2*00", "no '\\$'"),
    (b"$GPGGA,1*4", "invalid NMEA checksum field"),
    (b"$GPGGA,1*GG", "invalid NMEA checksum field"),
    (b"$gpgga,1", "invalid NMEA address field"),
    (b"$GPGGAXX,1", "invalid NMEA address field"),
    ("$GPGGA,\u00e9".encode(), "non-ASCII"),
    (b"$" + b"A" * 2000, "characters"),
])
def test_not_a_sentence(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_sentence(line, require_checksum=False)


def test_proprietary_sentences_are_valid_but_give_nothing() -> None:
    s = parse_sentence(format_sentence("PUBX,00,081350.00,4717.113210,N"))
    assert (s.talker, s.type) == ("P", "UBX")
    assert sentence_points(s) is None
    assert points(format_sentence("GPGSV,1,1,01,05,58,310,32")) is None


# ---- points of each sentence ----------------------------------------------------


def test_gga() -> None:
    assert points(GGA) == {"fix_quality": 1, "satellites": 8, "hdop": 0.9,
                           "latitude": LAT, "longitude": LON, "altitude": 545.4}


def test_gga_without_fix_gives_quality_and_satellites_only() -> None:
    assert points(format_sentence("GPGGA,123520,,,,,0,03,99.9,,M,,M,,")) == {
        "fix_quality": 0, "satellites": 3}


def test_rmc() -> None:
    assert points(RMC) == {"latitude": LAT, "longitude": LON,
                           "speed": 22.4 * KNOT, "course": 84.4}


def test_rmc_void_or_mode_n_gives_nothing() -> None:
    assert points(format_sentence("GPRMC,123519,V,4807.038,N,01131.000,E,0.0,0.0,230394,,")) \
        == {}
    assert points(format_sentence(
        "GNRMC,123519,A,4807.038,N,01131.000,E,0.0,0.0,230394,,,N")) == {}


def test_south_and_west_are_negative() -> None:
    got = points(format_sentence("GPGLL,3351.8620,S,15112.3880,W,001212,A,A"))
    assert got == {"latitude": -(33 + 51.862 / 60), "longitude": -(151 + 12.388 / 60)}


def test_vtg_knots_or_kmh() -> None:
    assert points(format_sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A")) == {
        "speed": 5.5 * KNOT, "course": 54.7}
    assert points(format_sentence("GPVTG,,T,,M,,N,036.0,K,D")) == {"speed": 10.0}
    assert points(format_sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,N")) == {}


def test_gsa_nmea_4_1_with_system_id() -> None:
    assert points(format_sentence("GNGSA,A,3,80,71,73,79,69,,,,,,,,1.83,1.09,1.47,2")) == {
        "fix_type": 3, "pdop": 1.83, "hdop": 1.09, "vdop": 1.47}
    assert points(format_sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99")) == {
        "fix_type": 1}


@pytest.mark.parametrize(("body", "message"), [
    ("GPGGA,123519,4807.038,N", "GPGGA: 3 fields, expected at least 9"),
    ("GPGGA,123519,4860.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "out of range"),
    ("GPGGA,123519,9100.000,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "out of range"),
    ("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "invalid coordinate"),
    ("GPGGA,123519,4807.038,N,01131.000,E,1,8x,0.9,545.4,M,46.9,M,,", "invalid integer"),
    ("GPGGA,123519,4807.038,N,01131.000,E,1,08,nan,545.4,M,46.9,M,,", "invalid number"),
    ("GPGGA,123519,48,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "invalid coordinate"),
    ("GPRMC,123519,X,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W", "invalid status"),
    ("GPVTG,054.7,X,034.4,M,005.5,N,010.2,K", "invalid unit letters"),
    ("GPGSA,Q,3,,,,,,,,,,,,,1,1,1", "invalid selection mode"),
    ("GPGLL,4807.038,N,01131.000,E,123519,Q", "invalid status"),
])
def test_malformed_fields_are_protocol_errors(body: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        points(format_sentence(body))


# ---- the decoder over captures ---------------------------------------------------


def decode_file(name: str, decoder: NmeaDecoder) -> tuple[list[tuple[str, object]], int, int]:
    """Every point of a capture, and the counts of used and ignored lines."""
    out: list[tuple[str, object]] = []
    used = ignored = 0
    for line in (CAPTURES / name).read_bytes().splitlines():
        found = decoder.decode(line)
        if found is None:
            ignored += 1
        else:
            used += 1
            out.extend(found)
    return out, used, ignored


def test_ublox_drive_gives_each_point_once_per_epoch() -> None:
    got, used, ignored = decode_file("ublox_m8_drive.nmea", NmeaDecoder())
    assert got == [p for i in range(8) for p in ublox_epoch(i)]
    assert got[:4] == [("latitude", 47 + 17.11437 / 60), ("longitude", 8 + 33.91522 / 60),
                       ("speed", 12.3 * KNOT), ("course", 52.1)]
    # per epoch: RMC VTG GGA GSA GSA GLL used; 3 GPGSV, 1 GLGSV ignored; plus 2 TXT, 1 PUBX
    assert (used, ignored) == (8 * 6, 8 * 4 + 3)


def test_without_epochs_every_sentence_gives_all_its_points() -> None:
    got, _, _ = decode_file("ublox_m8_drive.nmea", NmeaDecoder(once_per_epoch=False))
    names = [name for name, _ in got]
    # RMC 4, VTG 2, GGA 6, GSA 4 (twice), GLL 2 per epoch
    assert len(got) == 8 * (4 + 2 + 6 + 4 + 4 + 2)
    assert names.count("latitude") == 8 * 3


def test_selected_points_and_sentences() -> None:
    got, used, ignored = decode_file(
        "ublox_m8_drive.nmea", NmeaDecoder(sentences=["GGA"], points=["altitude", "satellites"]))
    assert got == [p for i in range(8) for p in [
        ("satellites", 12), ("altitude", float(f"{499.6 + 0.1 * i:.1f}"))]]
    assert (used, ignored) == (8, 83 - 8)


def test_sirf_cold_start_until_fix_south_west() -> None:
    got, used, ignored = decode_file("sirf_cold_start.nmea", NmeaDecoder())
    no_fix = [("fix_quality", 0), ("satellites", 0), ("fix_type", 1)]
    fixes = []
    for i, (hd, pd, vd) in enumerate([("2.4", "3.1", "2.2"), ("2.1", "2.8", "2.0"),
                                      ("1.8", "2.5", "1.8"), ("1.5", "2.2", "1.6")]):
        fixes += [
            ("fix_quality", 1), ("satellites", 4 + i), ("hdop", float(hd)),
            ("latitude", -(34 + float(f"36.{2220 + 7 * i:04d}") / 60)),
            ("longitude", -(58 + float(f"22.{8960 + 11 * i:04d}") / 60)),
            ("altitude", 25.0 + i),
            ("fix_type", 3), ("pdop", float(pd)), ("vdop", float(vd)),
            ("speed", float(f"0.{52 + i:02d}") * KNOT), ("course", 181.37 + i),
        ]
    assert got == no_fix + no_fix + [("fix_quality", 0), ("satellites", 3), ("fix_type", 1)] \
        + fixes
    assert (used, ignored) == (27, 2)


def test_every_talker_is_accepted() -> None:
    got, used, ignored = decode_file("talkers.nmea", NmeaDecoder(points=["fix_quality"]))
    assert got == [("fix_quality", q) for q in (1, 1, 2, 1, 1, 4, 1)]
    assert (used, ignored) == (7, 0)


def test_captures_have_valid_checksums() -> None:
    for path in sorted(CAPTURES.glob("*.nmea")):
        for line in path.read_bytes().splitlines():
            assert line.startswith(b"$") and line[-3:-2] == b"*"
            body, given_sum = line[1:-3], int(line[-2:], 16)
            acc = 0
            for byte in body:
                acc ^= byte
            assert acc == given_sum, (path.name, line)


def test_decoder_reset_starts_a_new_epoch() -> None:
    d = NmeaDecoder(points=["satellites"])
    assert d.decode(GGA) == [("satellites", 8)]
    assert d.decode(GGA) == []  # the same epoch (same UTC time)
    d.reset()
    assert d.decode(GGA) == [("satellites", 8)]


# ---- fuzzing -----------------------------------------------------------------------


@pytest.mark.property
@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    d = NmeaDecoder()
    try:
        d.decode(data)
    except ProtocolError:
        pass


field_text = st.text(alphabet="0123456789.,-+NSEWAVMTKnx", max_size=80)


@pytest.mark.property
@settings(max_examples=examples(800), deadline=None)
@given(st.sampled_from(["GPGGA", "GNRMC", "GLVTG", "GAGSA", "BDGLL", "GPGSV"]), field_text)
def test_fields_behind_a_valid_checksum_never_crash_and_stay_in_range(
        address: str, fields: str) -> None:
    line = format_sentence(f"{address},{fields}")
    try:
        s = parse_sentence(line)
        found = sentence_points(s)
    except ProtocolError:
        return
    assert isinstance(s, Sentence)
    for name, value in (found or {}).items():
        assert name in POINTS
        assert value == value  # not NaN
        if name == "latitude":
            assert -90 <= value <= 90
        if name == "longitude":
            assert -180 <= value <= 180


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.integers(0, 82), st.integers(0, 255))
def test_a_corrupted_byte_is_caught_or_harmless(at: int, byte: int) -> None:
    line = bytearray(GGA)
    at %= len(line)
    line[at] = byte
    try:
        found = NmeaDecoder().decode(bytes(line))
    except ProtocolError:
        return
    # The XOR checksum catches every single-byte change; what passes is the line itself,
    # or a change before the '$' (ignored as line noise).
    assert found is not None
    assert bytes(line) == GGA or at == 0
