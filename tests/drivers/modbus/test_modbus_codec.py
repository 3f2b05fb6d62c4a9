"""The register codec: known vectors for every type and order, and round trips."""

from __future__ import annotations

import math
import struct

import pytest
from gatewayd.drivers.modbus import codec
from gatewayd.drivers.modbus.codec import ValueType, parse_type
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.errors import ProtocolError

# (type, value, {order: registers}) written out by hand from the value's
# big-endian bytes A B C D ...
VECTORS = [
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("int16", -32768, {"ABCD": [0x8000], "CDAB": [0x8000], "BADC": [0x0080], "DCBA": [0x0080]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412],
                        "DCBA": [0x3412]}),
    ("int32", 0x12345678, {"ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
                           "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]}),
    ("int32", -123456789, {"ABCD": [0xF8A4, 0x32EB], "CDAB": [0x32EB, 0xF8A4],
                           "BADC": [0xA4F8, 0xEB32], "DCBA": [0xEB32, 0xA4F8]}),
    ("uint32", 4000000000, {"ABCD": [0xEE6B, 0x2800], "CDAB": [0x2800, 0xEE6B],
                            "BADC": [0x6BEE, 0x0028], "DCBA": [0x0028, 0x6BEE]}),
    ("float32", struct.unpack(">f", bytes.fromhex("40490fdb"))[0],
     {"ABCD": [0x4049, 0x0FDB], "CDAB": [0x0FDB, 0x4049], "BADC": [0x4940, 0xDB0F],
      "DCBA": [0xDB0F, 0x4940]}),
    ("float32", -1.5, {"ABCD": [0xBFC0, 0x0000], "CDAB": [0x0000, 0xBFC0],
                       "BADC": [0xC0BF, 0x0000], "DCBA": [0x0000, 0xC0BF]}),
    ("int64", 0x0102030405060708,
     {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
      "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("int64", -2, {"ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
                   "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                   "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
                   "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    ("uint64", 0xFEDCBA9876543210,
     {"ABCD": [0xFEDC, 0xBA98, 0x7654, 0x3210], "CDAB": [0x3210, 0x7654, 0xBA98, 0xFEDC],
      "BADC": [0xDCFE, 0x98BA, 0x5476, 0x1032], "DCBA": [0x1032, 0x5476, 0x98BA, 0xDCFE]}),
    ("float64", 1.0, {"ABCD": [0x3FF0, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF0],
                      "BADC": [0xF03F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF03F]}),
    ("float64", -2.5, {"ABCD": [0xC004, 0, 0, 0], "CDAB": [0, 0, 0, 0xC004],
                       "BADC": [0x04C0, 0, 0, 0], "DCBA": [0, 0, 0, 0x04C0]}),
    ("string(5)", "Hello", {"ABCD": [0x4865, 0x6C6C, 0x6F00], "CDAB": [0x6F00, 0x6C6C, 0x4865],
                            "BADC": [0x6548, 0x6C6C, 0x006F],
                            "DCBA": [0x006F, 0x6C6C, 0x6548]}),
    ("string(4)", "AB", {"ABCD": [0x4142, 0x0000], "CDAB": [0x0000, 0x4142],
                         "BADC": [0x4241, 0x0000], "DCBA": [0x0000, 0x4241]}),
    ("bool", True, {"ABCD": [0x0001], "CDAB": [0x0001], "BADC": [0x0100], "DCBA": [0x0100]}),
    ("bool", False, {"ABCD": [0], "CDAB": [0], "BADC": [0], "DCBA": [0]}),
]
CASES = [(t, v, order, regs) for t, v, by_order in VECTORS for order, regs in by_order.items()]


@pytest.mark.parametrize(("type_name", "value", "order", "registers"), CASES)
def test_known_vector_decodes_exactly(type_name: str, value: object, order: str,
                                      registers: list[int]) -> None:
    assert codec.decode(registers, parse_type(type_name), order) == value


@pytest.mark.parametrize(("type_name", "value", "order", "registers"), CASES)
def test_known_vector_encodes_exactly(type_name: str, value: object, order: str,
                                      registers: list[int]) -> None:
    assert codec.encode(value, parse_type(type_name), order) == registers  # type: ignore[arg-type]


def test_every_type_and_order_has_a_vector() -> None:
    covered = {(parse_type(t).name, order) for t, _, order, _ in CASES}
    names = [*codec.NUMERIC_TYPES, "bool", "string"]
    assert covered == {(n, o) for n in names for o in codec.ORDERS}


def test_any_nonzero_register_is_true_for_bool() -> None:
    assert codec.decode([0x8000], ValueType("bool")) is True


def test_string_stops_at_its_length_and_trailing_nul() -> None:
    assert codec.decode([0x4142, 0x4344], parse_type("string(3)")) == "ABC"
    assert codec.decode([0x4100, 0x0000], parse_type("string(4)")) == "A"


@pytest.mark.parametrize(("register", "bit", "expected"),
                         [(0x0008, 3, True), (0x0008, 2, False), (0x8000, 15, True),
                          (0x0001, 0, True), (0xFFFE, 0, False)])
def test_decode_bit_counts_from_the_least_significant(register: int, bit: int,
                                                      expected: bool) -> None:
    assert codec.decode_bit(register, bit) is expected


def test_wrong_register_count_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="float32 needs 2 registers, got 1"):
        codec.decode([1], ValueType("float32"))


def test_register_out_of_16_bits_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="70000 is not a 16-bit"):
        codec.decode([70000], ValueType("uint16"))


@pytest.mark.parametrize(("type_name", "value", "message"), [
    ("int16", 32768, "32768 does not fit int16 \\(-32768 to 32767\\)"),
    ("uint16", -1, "-1 does not fit uint16 \\(0 to 65535\\)"),
    ("uint64", 1 << 64, "does not fit uint64"),
    ("int32", 1.5, "expected an integer for int32"),
    ("float32", 1e39, "does not fit float32"),
    ("float32", "1", "expected a number for float32"),
    ("string(2)", "abc", "string of 3 bytes does not fit string\\(2\\)"),
    ("bool", 1, "expected true or false for bool"),
])
def test_encode_refuses_values_that_do_not_fit(type_name: str, value: object,
                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode(value, parse_type(type_name))  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "message"), [
    ("flaot32", "unknown type 'flaot32'"),
    ("string(0)", "invalid length in 'string\\(0\\)'; expected string\\(n\\) with n from 1 to 250"),
    ("string(251)", "expected string\\(n\\) with n from 1 to 250"),
])
def test_parse_type_refuses_unknown_types(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_type(text)


def test_register_counts() -> None:
    counts = {t: parse_type(t).registers for t in (*codec.NUMERIC_TYPES, "bool", "string(7)")}
    assert counts == {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4,
                      "uint64": 4, "float32": 2, "float64": 4, "bool": 1, "string(7)": 4}


def test_scale_and_offset() -> None:
    assert codec.scale_value(215, 0.1, 0.0) == pytest.approx(21.5)
    assert codec.scale_value(100, 1.0, -40.0) == 60.0
    assert codec.scale_value(7, 1.0, 0.0) == 7 and isinstance(codec.scale_value(7, 1.0, 0.0), int)
    assert codec.unscale_value(21.5, ValueType("int16"), 0.1, 0.0) == 215
    assert codec.unscale_value(60.0, ValueType("uint16"), 1.0, -40.0) == 100
    with pytest.raises(ValueError, match="raw value 40000 does not fit int16"):
        codec.unscale_value(4000.0, ValueType("int16"), 0.1, 0.0)
    with pytest.raises(ValueError, match="not a finite number"):
        codec.unscale_value(math.nan, ValueType("float32"), 1.0, 0.0)


# ---- properties ----------------------------------------------------------------

INT_TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64"]
orders = st.sampled_from(codec.ORDERS)


@st.composite
def int_values(draw: st.DrawFn) -> tuple[ValueType, int]:
    vtype = ValueType(draw(st.sampled_from(INT_TYPES)))
    lo, hi = codec.int_range(vtype)
    return vtype, draw(st.integers(lo, hi))


@pytest.mark.property
@given(int_values(), orders)
def test_integers_round_trip(case: tuple[ValueType, int], order: str) -> None:
    vtype, value = case
    registers = codec.encode(value, vtype, order)
    assert len(registers) == vtype.registers
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert codec.decode(registers, vtype, order) == value


@pytest.mark.property
@given(st.sampled_from(INT_TYPES), orders, st.data())
def test_every_register_pattern_is_one_integer(type_name: str, order: str,
                                               data: st.DataObject) -> None:
    vtype = ValueType(type_name)
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=vtype.registers,
                                   max_size=vtype.registers))
    value = codec.decode(registers, vtype, order)
    assert codec.encode(value, vtype, order) == registers


@pytest.mark.property
@given(st.floats(width=32, allow_nan=False), orders)
def test_float32_round_trips(value: float, order: str) -> None:
    vtype = ValueType("float32")
    assert codec.decode(codec.encode(value, vtype, order), vtype, order) == value


@pytest.mark.property
@given(st.floats(allow_nan=False), orders)
def test_float64_round_trips(value: float, order: str) -> None:
    vtype = ValueType("float64")
    assert codec.decode(codec.encode(value, vtype, order), vtype, order) == value


@pytest.mark.property
@given(st.integers(1, 40), orders, st.data())
def test_strings_round_trip(length: int, order: str, data: st.DataObject) -> None:
    text = data.draw(st.text(st.characters(exclude_characters="\x00",
                                           exclude_categories=("Cs",)), max_size=length)
                     .filter(lambda s: len(s.encode()) <= length))
    vtype = ValueType("string", length)
    assert codec.decode(codec.encode(text, vtype, order), vtype, order) == text


@pytest.mark.property
@given(st.integers(-32768, 32767), st.sampled_from([0.1, 0.01, 0.5, 10.0]),
       st.sampled_from([0.0, -40.0, 273.15]))
def test_scaled_integers_round_trip(raw: int, scale: float, offset: float) -> None:
    vtype = ValueType("int16")
    value = codec.scale_value(raw, scale, offset)
    assert isinstance(value, float)
    assert codec.unscale_value(value, vtype, scale, offset) == raw
