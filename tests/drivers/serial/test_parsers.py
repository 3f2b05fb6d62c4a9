"""Line and frame parsers: typed fields, scale and offset, named errors, fuzzing."""

from __future__ import annotations

import re
import struct

import pytest
from gatewayd.drivers.serial.parsers import (
    CsvLineParser,
    FieldSpec,
    FrameParser,
    JsonLineParser,
    KvLineParser,
    Point,
    RegexLineParser,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.errors import ProtocolError
from tests.support.properties import examples

# ---- json ---------------------------------------------------------------------------


def test_json_fields_with_types_scale_and_nested_keys() -> None:
    p = JsonLineParser([
        FieldSpec("temp", "float", unit="Cel"),
        FieldSpec("count", "int"),
        FieldSpec("pressure", "int", scale=0.1, offset=-1.0, unit="hPa", key="env.p"),
        FieldSpec("alarm", "bool"),
        FieldSpec("state", "string"),
    ])
    line = b'{"temp": 21.5, "count": 7, "env": {"p": 10134}, "alarm": false, "state": "run"}'
    assert p.parse(line) == [
        Point("temp", 21.5, "Cel"), Point("count", 7, None),
        Point("pressure", 10134 * 0.1 - 1.0, "hPa"), Point("alarm", False, None),
        Point("state", "run", None),
    ]


def test_json_numbers_in_strings_and_integral_floats() -> None:
    p = JsonLineParser([FieldSpec("a", "float"), FieldSpec("b", "int"), FieldSpec("c", "bool")])
    assert p.parse(b'{"a": "3.5", "b": 4.0, "c": 1}') == [
        Point("a", 3.5, None), Point("b", 4, None), Point("c", True, None)]


def test_json_without_fields_takes_every_scalar() -> None:
    p = JsonLineParser()
    assert p.parse(b'{"t": 1.5, "n": 2, "ok": true, "id": "x", "sub": {"a": 1}, '
                   b'"list": [1], "none": null, "a/b": 3}') == [
        Point("t", 1.5, None), Point("n", 2, None), Point("ok", True, None),
        Point("id", "x", None)]


def test_json_optional_field_may_be_absent() -> None:
    p = JsonLineParser([FieldSpec("a"), FieldSpec("b", optional=True)])
    assert p.parse(b'{"a": 1}') == [Point("a", 1.0, None)]
    with pytest.raises(ProtocolError, match="field 'a' is missing"):
        p.parse(b'{"b": 1}')


@pytest.mark.parametrize(("line", "message"), [
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"a": NaN}', "invalid JSON"),
    (b'{"a": 1e999}', "not finite"),
    (b'{"a": true}', "expected a number"),
    (b'{"a": "x1"}', "invalid number"),
    (b"\xff\xfe", "not valid utf-8"),
    (b"[" * 100_000, "invalid JSON"),
])
def test_json_errors(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        JsonLineParser([FieldSpec("a")]).parse(line)


def test_json_type_errors() -> None:
    with pytest.raises(ProtocolError, match=r"expected an integer, got 1\.5"):
        JsonLineParser([FieldSpec("a", "int")]).parse(b'{"a": 1.5}')
    with pytest.raises(ProtocolError, match="expected a boolean"):
        JsonLineParser([FieldSpec("a", "bool")]).parse(b'{"a": 2}')
    with pytest.raises(ProtocolError, match="expected a string"):
        JsonLineParser([FieldSpec("a", "string")]).parse(b'{"a": 2}')


# ---- csv ------------------------------------------------------------------------------


def test_csv_columns() -> None:
    p = CsvLineParser([FieldSpec("flow", "float", column=1, unit="l/s"),
                       FieldSpec("total", "int", column=3, scale=10),
                       FieldSpec("name", "string", column=0)])
    assert p.parse(b'"pump, left",  3.25 ,x,120') == [
        Point("flow", 3.25, "l/s"), Point("total", 1200.0, None),
        Point("name", "pump, left", None)]


def test_csv_other_delimiter_and_missing_column() -> None:
    p = CsvLineParser([FieldSpec("a", column=0), FieldSpec("b", column=5)], delimiter=";")
    with pytest.raises(ProtocolError, match="field 'b' is missing"):
        p.parse(b"1;2")
    p = CsvLineParser([FieldSpec("a", column=0), FieldSpec("b", column=5, optional=True)],
                      delimiter=";")
    assert p.parse(b"1;2") == [Point("a", 1.0, None)]


def test_csv_errors() -> None:
    p = CsvLineParser([FieldSpec("a", "int", column=0)])
    with pytest.raises(ProtocolError, match=r"invalid integer '1\.5'"):
        p.parse(b"1.5")
    with pytest.raises(ProtocolError, match="invalid CSV"):
        p.parse(b'"unterminated')


# ---- kv -------------------------------------------------------------------------------


def test_kv_default_separators() -> None:
    p = KvLineParser([FieldSpec("T", unit="Cel"), FieldSpec("rh", key="H"),
                      FieldSpec("on", "bool", key="PUMP")])
    assert p.parse(b"STATUS T=21.5, H=40;PUMP=on") == [
        Point("T", 21.5, "Cel"), Point("rh", 40.0, None), Point("on", True, None)]


def test_kv_custom_separator_and_assign() -> None:
    p = KvLineParser([FieldSpec("a", "int"), FieldSpec("b", "string")], separator="|",
                     assign=":")
    assert p.parse(b"a: 12 | b: hello world") == [Point("a", 12, None),
                                                  Point("b", "hello world", None)]


def test_kv_without_fields_infers_types() -> None:
    assert KvLineParser().parse(b"n=3 x=2.5 s=abc e=1e3 bad/name=1") == [
        Point("n", 3, None), Point("x", 2.5, None), Point("s", "abc", None),
        Point("e", 1000.0, None)]


def test_kv_errors() -> None:
    with pytest.raises(ProtocolError, match="no key=value pairs"):
        KvLineParser().parse(b"hello there")
    with pytest.raises(ProtocolError, match="invalid boolean 'maybe'"):
        KvLineParser([FieldSpec("a", "bool")]).parse(b"a=maybe")


# ---- regex ----------------------------------------------------------------------------


def test_regex_groups_of_a_weighing_scale() -> None:
    p = RegexLineParser(re.compile(r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)kg"),
                        [FieldSpec("weight", unit="kg"),
                         FieldSpec("stable", "bool", group="status")])
    with pytest.raises(ProtocolError, match="invalid boolean 'ST'"):
        p.parse(b"ST,GS,+0012.34kg")
    p = RegexLineParser(re.compile(r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)kg"),
                        [FieldSpec("weight", unit="kg"), FieldSpec("status", "string")])
    assert p.parse(b"ST,GS,+0012.34kg") == [Point("weight", 12.34, "kg"),
                                            Point("status", "ST", None)]
    with pytest.raises(ProtocolError, match="does not match"):
        p.parse(b"OL,GS,+9999.99kg?")


def test_regex_group_that_did_not_take_part() -> None:
    p = RegexLineParser(re.compile(r"(?P<a>\d+)(,(?P<b>\d+))?"),
                        [FieldSpec("a", "int"), FieldSpec("b", "int", optional=True)])
    assert p.parse(b"7") == [Point("a", 7, None)]
    assert p.parse(b"7,8") == [Point("a", 7, None), Point("b", 8, None)]


# ---- frames -----------------------------------------------------------------------------


def test_frame_fields_every_type_and_order() -> None:
    frame = (b"\xaa" + struct.pack(">h", -1234) + struct.pack("<I", 70000)
             + struct.pack(">f", 1.5) + b"\x05")
    p = FrameParser([
        FieldSpec("t", "int16", at=1, scale=0.01, unit="Cel"),
        FieldSpec("n", "uint32", at=3, endian="little"),
        FieldSpec("f", "float32", at=7),
        FieldSpec("bit0", "bool", at=11, bit=0),
        FieldSpec("bit1", "bool", at=11, bit=1),
        FieldSpec("any", "bool", at=11),
        FieldSpec("u8", "uint8", at=11),
    ])
    assert p.parse(frame) == [
        Point("t", -1234 * 0.01, "Cel"), Point("n", 70000, None), Point("f", 1.5, None),
        Point("bit0", True, None), Point("bit1", False, None), Point("any", True, None),
        Point("u8", 5, None)]


def test_frame_too_short_for_a_field() -> None:
    p = FrameParser([FieldSpec("a", "uint16", at=2)])
    with pytest.raises(ProtocolError, match="field 'a' is missing"):
        p.parse(b"\x01\x02\x03")
    with pytest.raises(ProtocolError, match="not finite"):
        FrameParser([FieldSpec("f", "float32", at=0)]).parse(struct.pack(">f", float("nan")))


# ---- fuzzing ------------------------------------------------------------------------------

PARSERS = [
    JsonLineParser(),
    JsonLineParser([FieldSpec("a", "int"), FieldSpec("b", "bool", key="x.y", optional=True),
                    FieldSpec("c", "string", optional=True)]),
    CsvLineParser([FieldSpec("a", column=0), FieldSpec("b", "int", column=2, scale=2.0)]),
    KvLineParser(),
    KvLineParser([FieldSpec("a", "int"), FieldSpec("b", "bool", optional=True)]),
    RegexLineParser(re.compile(r"(?P<a>[-+\d.e]+)\s*(?P<b>\w*)"),
                    [FieldSpec("a"), FieldSpec("b", "bool", optional=True)]),
    FrameParser([FieldSpec("a", "float64", at=1), FieldSpec("b", "int8", at=0, offset=3)]),
]


@pytest.mark.property
@settings(max_examples=examples(600), deadline=None)
@given(st.sampled_from(PARSERS),
       st.one_of(st.binary(max_size=120),
                 st.text(alphabet='{}[]":,=;. -+0123456789aebtruefalsxyn\\', max_size=120)
                 .map(str.encode)))
def test_arbitrary_input_only_ever_raises_protocol_error(parser: object, data: bytes) -> None:
    try:
        points = parser.parse(data)  # type: ignore[attr-defined]
    except ProtocolError:
        return
    for point in points:
        assert isinstance(point, Point)
        assert isinstance(point.value, (int, float, bool, str))
        if isinstance(point.value, float):
            assert point.value == point.value and abs(point.value) != float("inf")
