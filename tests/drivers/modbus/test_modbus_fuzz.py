"""Property tests of Modbus decoding: whatever a device answers, every point of a
planned request decodes to a value of its kind or to a named error.

Point maps are drawn (every type, order, space, bit address, scale), planned into
requests exactly as the driver plans them, and each request is answered with
arbitrary register contents of the asked length.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from gatewayd.drivers.modbus import codec
from gatewayd.drivers.modbus.codec import ORDERS, ValueType
from gatewayd.drivers.modbus.driver import decode_point
from gatewayd.drivers.modbus.plan import build_plan
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.errors import ProtocolError
from tests.support.properties import examples

from .conftest import parse

TYPES = [*codec.NUMERIC_TYPES, "bool", "string(1)", "string(7)", "string(40)"]


@st.composite
def point_tables(draw: st.DrawFn, index: int) -> dict[str, Any]:
    space = draw(st.sampled_from(["hr", "ir", "co", "di"]))
    address = draw(st.integers(0, 300))
    table: dict[str, Any] = {"name": f"p{index}"}
    if space in ("co", "di"):
        table["address"] = f"{space}:{address}"
        return table
    vtype = draw(st.sampled_from(TYPES))
    if vtype in ("uint16", "int16") and draw(st.booleans()):
        table["address"] = f"{space}:{address}.{draw(st.integers(0, 15))}"
        return table
    table.update(address=f"{space}:{address}", type=vtype)
    if vtype != "bool":
        table["order"] = draw(st.sampled_from(ORDERS))
    if vtype in codec.NUMERIC_TYPES and draw(st.booleans()):
        table["scale"] = draw(st.sampled_from([0.001, 0.1, -0.5, 10.0, 1e3]))
        table["offset"] = draw(st.sampled_from([0.0, -40.0, 273.15]))
    return table


@st.composite
def point_maps(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 8))
    return [draw(point_tables(i)) for i in range(n)]


registers = st.one_of(st.integers(0, 0xFFFF),
                      st.sampled_from([0, 0xFFFF, 0x8000, 0x7FFF, 0x7F80, 0x7FC0, 0xFF80]))


@pytest.mark.property
@settings(max_examples=examples(150))
@given(point_maps(), st.sampled_from([0, 10, 125]), st.data())
def test_any_answer_decodes_to_values_or_named_errors(tables: list[dict[str, Any]], gap: int,
                                                      data: st.DataObject) -> None:
    options, problems = parse({"url": "tcp://127.0.0.1:502", "points": tables,
                               "max_gap": gap})
    if problems:  # overlapping names or addresses the schema refuses: not this property
        return
    points = {p.name: p for p in options.points}
    for request in build_plan(options):
        if request.space in ("co", "di"):
            values: list[int] | list[bool] = data.draw(st.lists(
                st.booleans(), min_size=request.count, max_size=request.count))
        else:
            values = data.draw(st.lists(registers, min_size=request.count,
                                        max_size=request.count))
        for name in request.points:
            point = points[name]
            try:
                value = decode_point(point, request, values)
            except (ProtocolError, ValueError) as err:
                # the only refusal of an answer of the right length: a float that is not
                # finite (NaN, infinity) where a measurement should be
                assert point.type.name in ("float32", "float64"), err
                continue
            if point.space in ("co", "di") or point.bit is not None \
                    or point.type.name == "bool":
                assert isinstance(value, bool)
            elif point.type.name == "string":
                assert isinstance(value, str) and len(value.encode()) <= 4 * point.type.length
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert math.isfinite(value)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.sampled_from(TYPES), st.sampled_from(ORDERS),
       st.lists(st.integers(-2**20, 2**20), max_size=6))
def test_any_register_list_decodes_or_raises_protocol_error(type_name: str, order: str,
                                                            words: list[int]) -> None:
    vtype = codec.parse_type(type_name)
    try:
        value = codec.decode(words, vtype, order)
    except ProtocolError:
        assert len(words) != vtype.registers or any(not 0 <= w <= 0xFFFF for w in words)
        return
    assert len(words) == vtype.registers
    assert isinstance(value, (bool, int, float, str))


@pytest.mark.property
@settings(max_examples=examples(200))
@given(st.integers(-2**20, 2**20), st.integers(0, 15))
def test_any_register_gives_a_bit_or_protocol_error(word: int, bit: int) -> None:
    try:
        assert codec.decode_bit(word, bit) == bool(word >> bit & 1)
    except ProtocolError:
        assert not 0 <= word <= 0xFFFF


def test_the_float_refusal_is_for_non_finite_values_only() -> None:
    vtype = ValueType("float32")
    assert math.isnan(codec.decode([0x7FC0, 0], vtype))  # the codec reads it; decode_point
    options, problems = parse({"url": "tcp://127.0.0.1:502", "points": [
        {"name": "f", "address": "hr:0", "type": "float32"}]})
    assert problems == []
    (request,) = build_plan(options)
    with pytest.raises(ValueError, match="nan"):
        decode_point(options.points[0], request, [0x7FC0, 0])
    assert decode_point(options.points[0], request, [0x4049, 0x0FDB]) == pytest.approx(3.14159,
                                                                                     rel=1e-6)


def test_a_float64_scaled_beyond_a_float_is_refused_not_infinite() -> None:
    # Found by the property above: 0x7FEF FFFF FFFF FFFF (about 1.8e308) times 1000.
    options, problems = parse({"url": "tcp://127.0.0.1:502", "points": [
        {"name": "big", "address": "hr:0", "type": "float64", "scale": 1000.0}]})
    assert problems == []
    (request,) = build_plan(options)
    with pytest.raises(ValueError, match="beyond a float once scaled by 1000"):
        decode_point(options.points[0], request, [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF])
