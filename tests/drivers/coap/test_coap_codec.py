"""The pure payload codec: every format, exact values, named errors, and properties
(garbage only ever gives a PayloadError; what a write encodes decodes back)."""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
import pytest
from gatewayd.drivers.coap.codec import Decoded, decode, encode_write, parse_number
from gatewayd.drivers.coap.config import CoapResource
from gatewayd.drivers.coap.errors import (
    InvalidValue,
    MalformedPayload,
    MissingField,
    PayloadError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.errors import ProtocolError, WriteRefused
from gatewayd.reading import Reading
from tests.support.properties import examples

from .conftest import parse

NOW = 1_800_000_000 * 10**9


def resource(*points: dict[str, Any]) -> CoapResource:
    opts, found = parse({"url": "coap://h", "resources": [
        {"path": "/r", "name": f"p{i}", **p} for i, p in enumerate(points)]})
    assert found == []
    (res,) = opts.resources
    return res


def run(res: CoapResource, payload: bytes) -> Decoded:
    return decode(res, payload, device="dev", now_ns=NOW)


def values(res: CoapResource, payload: bytes) -> dict[str, Any]:
    out = run(res, payload)
    assert out.errors == [], out.errors
    return {r.point: r.value for r in out.readings}


def error(res: CoapResource, payload: bytes) -> PayloadError:
    out = run(res, payload)
    assert out.readings == [] and len(out.errors) == 1, out
    return out.errors[0][1]


# ---- text ------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "expected"), [
    (b"21.5", 21.5), (b" -7 \r\n", -7), (b"+3", 3), (b"1e3", 1000.0), (b".5", 0.5),
    (b"123456789012345678901234567890", 123456789012345678901234567890), (b"-0.0", -0.0),
])
def test_text_numbers_are_exact(payload: bytes, expected: float) -> None:
    got = values(resource({}), payload)["p0"]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("payload", "kind", "text"), [
    (b"\xff\xfe", MalformedPayload, "not UTF-8 text: invalid start byte at byte 0"),
    (b"twelve", InvalidValue, "expected a number, got 'twelve'"),
    (b"nan", InvalidValue, "expected a number, got 'nan'"),
    (b"1e999", InvalidValue, "expected a number, got '1e999'"),
    (b"", InvalidValue, "expected a number, got ''"),
    (b"21.5 C", InvalidValue, "expected a number, got '21.5 C'"),
])
def test_text_garbage_is_named(payload: bytes, kind: type[PayloadError], text: str) -> None:
    res = resource({})
    if kind is MalformedPayload:
        with pytest.raises(MalformedPayload) as info:
            run(res, payload)
        err: PayloadError = info.value
    else:
        err = error(res, payload)
    assert type(err) is kind and str(err) == f"/r (text): {text}"
    assert err.path == "/r" and err.format == "text" and isinstance(err, ProtocolError)


def test_text_types_scale_and_unit() -> None:
    res = resource({"type": "bool"})
    assert [values(res, p)["p0"] for p in (b"on", b"FALSE", b"1", b"no")] == [
        True, False, True, False]
    assert values(resource({"type": "string"}), b"  Nov 27 14:10:31\n") == {
        "p0": "Nov 27 14:10:31"}
    out = run(resource({"scale": 0.1, "offset": -40, "unit": "Cel"}), b"655")
    assert out.readings == [Reading("dev", "p0", 655 * 0.1 - 40, "Cel", NOW)]


# ---- JSON and CBOR ---------------------------------------------------------------


def test_json_fields_and_scalars() -> None:
    doc = {"env": {"temp": 21.5, "list": [1, {"x": "deep"}]}, "on": True, "n": 7, "s": "12.5"}
    res = resource({"format": "json", "field": "env.temp"}, {"format": "json", "field": "on"},
                   {"format": "json", "field": "n"}, {"format": "json", "field": "env.list.1.x"},
                   {"format": "json", "field": "s", "type": "number"},
                   {"format": "json", "field": "s"})
    assert values(res, json.dumps(doc).encode()) == {
        "p0": 21.5, "p1": True, "p2": 7, "p3": "deep", "p4": 12.5, "p5": "12.5"}
    assert values(resource({"format": "json"}), b" 42 ") == {"p0": 42}
    assert values(resource({"format": "json"}), b'"text"') == {"p0": "text"}


def test_json_errors_are_per_point() -> None:
    res = resource({"format": "json", "field": "temp"}, {"format": "json", "field": "hum"},
                   {"format": "json", "field": "obj"}, {"format": "json", "field": "flag",
                                                        "type": "number"})
    out = run(res, b'{"temp": 20, "obj": {"a": 1}, "flag": true}')
    assert [(r.point, r.value) for r in out.readings] == [("p0", 20)]
    errors = {name: (type(err), str(err)) for name, err in out.errors}
    assert errors == {
        "p1": (MissingField, "/r (json): no 'hum' in an object (field 'hum')"),
        "p2": (InvalidValue, "/r (json): obj: expected a number, true/false or a string, got "
                             "an object (set field to pick a value)"),
        "p3": (InvalidValue, "/r (json): flag: expected a number, got true/false"),
    }
    missing = out.errors[0][1]
    assert isinstance(missing, MissingField) and missing.field == "hum"
    assert missing.reason == "missing_field"


@pytest.mark.parametrize("payload", [b"{", b"NaN", b'{"a": Infinity}', b"\xff", b"[1,]"])
def test_json_garbage_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedPayload, match=r"^/r \(json\): not valid JSON"):
        run(resource({"format": "json", "field": "a"}), payload)


def test_cbor_values() -> None:
    doc = {"level": 7, "nested": {"v": -2.5}, 3: "by int key", "raw": b"\x01\x02"}
    res = resource({"format": "cbor", "field": "level"}, {"format": "cbor", "field": "nested.v"},
                   {"format": "cbor", "field": "3"}, {"format": "cbor", "field": "raw"})
    assert values(res, cbor2.dumps(doc)) == {"p0": 7, "p1": -2.5, "p2": "by int key",
                                             "p3": b"\x01\x02"}
    err = error(resource({"format": "cbor"}), cbor2.dumps(float("nan")))
    assert isinstance(err, InvalidValue) and "nan is not a finite number" in str(err)
    with pytest.raises(MalformedPayload, match="not valid CBOR"):
        run(resource({"format": "cbor"}), b"\x9f\x01")


def test_oversized_payloads_are_refused_whole() -> None:
    with pytest.raises(MalformedPayload, match="65537 bytes; at most 65536 are read"):
        run(resource({}), b"1" * 65537)


# ---- SenML -----------------------------------------------------------------------

PACK = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.7e9, "n": "temp", "u": "Cel", "v": 23.1},
    {"n": "hum", "u": "%RH", "v": 41, "t": 1},
    {"n": "door", "vb": False},
    {"n": "temp", "u": "Cel", "v": 23.4, "t": 60},
]


def test_senml_records_become_points_named_after_them() -> None:
    out = run(resource({"format": "senml"}), json.dumps(PACK).encode())
    assert out.errors == []
    assert out.readings == [
        Reading("dev", "p0.temp", 23.1, "Cel", 1_700_000_000 * 10**9),
        Reading("dev", "p0.hum", 41, "%RH", 1_700_000_001 * 10**9),
        Reading("dev", "p0.door", False, None, 1_700_000_000 * 10**9),
        Reading("dev", "p0.temp", 23.4, "Cel", 1_700_000_060 * 10**9),
    ]


def test_senml_field_picks_records_and_the_point_unit_wins() -> None:
    res = resource({"format": "senml", "field": "temp", "unit": "K", "offset": 273.15},
                   {"format": "senml", "field": "missing"})
    out = run(res, json.dumps(PACK).encode())
    assert [(r.point, r.value, r.unit) for r in out.readings] == [
        ("p0", 23.1 + 273.15, "K"), ("p0", 23.4 + 273.15, "K")]
    ((name, err),) = out.errors
    assert name == "p1" and isinstance(err, MissingField)
    assert str(err) == "/r (senml): no record named 'missing'"


def test_senml_cbor_and_relative_times() -> None:
    pack = [{-2: "urn:dev:mac:0024befffe804ff1/", 0: "v", 2: 3.5, 6: -5},
            {0: "blob", 8: b"\x00\xff"}, {-3: 1.7e9, 0: "on", 4: True}]
    out = run(resource({"format": "senml-cbor"}), cbor2.dumps(pack))
    assert out.errors == []
    assert [(r.point, r.value, r.time) for r in out.readings] == [
        ("p0.v", 3.5, NOW - 5 * 10**9), ("p0.blob", b"\x00\xff", NOW),
        ("p0.on", True, 1_700_000_000 * 10**9)]


def test_senml_record_names_must_make_point_names() -> None:
    pack = [{"bn": "urn:a:", "n": "ok", "v": 1}, {"bn": "other/", "n": "x", "v": 2},
            {"bn": "urn:a:", "v": 3}]
    out = run(resource({"format": "senml"}), json.dumps(pack).encode())
    assert [(r.point, r.value) for r in out.readings] == [("p0.ok", 1), ("p0", 3)]
    ((name, err),) = out.errors
    assert name == "p0.other/x" and isinstance(err, InvalidValue)
    assert "record name 'other/x' does not make a point name" in str(err)


@pytest.mark.parametrize(("pack", "text"), [
    (b"{}", "a SenML pack must be a non-empty array of records"),
    (b"[]", "a SenML pack must be a non-empty array of records"),
    (b"[1]", "SenML record 0: expected an object, got a number"),
    (b'[{"n": "a"}]', "SenML record 0: no value"),
    (b'[{"n": "a", "v": "x"}]', "SenML record 0: 'v' must be a number, got 'x'"),
    (b'[{"n": "a", "v": 1, "vs": "x"}]', "SenML record 0: several values (v, vs)"),
    (b'[{"n": "a", "v": 1, "foo_": 1}]', "SenML record 0: unsupported label 'foo_'"),
    (b'[{"bn": 5, "v": 1}]', "SenML record 0: 'bn' must be a string"),
    (b"[{", "not valid JSON"),
])
def test_senml_garbage_is_malformed(pack: bytes, text: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        run(resource({"format": "senml"}), pack)
    assert text in str(info.value) and info.value.reason == "malformed"


# ---- writes ----------------------------------------------------------------------


def point(**kw: Any) -> Any:
    return resource(kw).points[0]


def test_write_encodings() -> None:
    rng = {"min": -100, "max": 100}
    assert encode_write(point(writable=rng), 21, device="d") == (b"21", 0)
    assert encode_write(point(writable=rng), 21.25, device="d") == (b"21.25", 0)
    assert encode_write(point(writable=rng, scale=0.1), 25, device="d") == (b"250", 0)
    assert encode_write(point(writable=rng, scale=0.5, offset=1), 2, device="d") == (b"2", 0)
    assert encode_write(point(writable=rng, scale=3), 1, device="d") == (
        b"0.333333333333", 0)
    assert encode_write(point(type="bool", writable=True), True, device="d") == (b"true", 0)
    assert encode_write(point(format="json", field="a.b", writable=rng), 5,
                        device="d") == (b'{"a":{"b":5}}', 50)
    assert encode_write(point(format="json", type="string", writable=True), "x",
                        device="d") == (b'"x"', 50)
    assert encode_write(point(format="cbor", field="level", writable=rng), 7,
                        device="d") == (cbor2.dumps({"level": 7}), 60)
    assert encode_write(point(format="senml", field="sp", unit="Cel", writable=rng), 21.5,
                        device="d") == (b'[{"n":"sp","v":21.5,"u":"Cel"}]', 110)
    assert encode_write(point(format="senml-cbor", field="on", type="bool", writable=True),
                        False, device="d") == (cbor2.dumps([{0: "on", 4: False}]), 112)


@pytest.mark.parametrize(("kw", "value", "text"), [
    ({}, 1, "point is not writable"),
    ({"writable": {"min": 0, "max": 10}}, 11, "value 11 is out of range [0, 10]"),
    ({"writable": {"min": 0, "max": 10}}, True, "expected a number, got True"),
    ({"writable": {"min": 0, "max": 10}}, "5", "expected a number, got '5'"),
    ({"writable": {"min": 0, "max": 10}}, math.nan, "nan is not a finite number"),
    ({"type": "bool", "writable": True}, 2, "expected true or false, got 2"),
    ({"format": "json", "type": "string", "writable": True}, 3, "expected a string, got 3"),
])
def test_write_refusals(kw: dict[str, Any], value: Any, text: str) -> None:
    with pytest.raises(WriteRefused) as info:
        encode_write(point(**kw), value, device="boiler")
    assert str(info.value) == text
    assert (info.value.device, info.value.point) == ("boiler", "p0")


# ---- properties ------------------------------------------------------------------

ALL_POINT_KINDS = [
    {}, {"type": "bool"}, {"type": "string"},
    {"format": "json"}, {"format": "json", "field": "a.0"}, {"format": "json", "type": "number",
                                                            "field": "x", "scale": 2},
    {"format": "cbor"}, {"format": "cbor", "field": "a"},
    {"format": "senml"}, {"format": "senml", "field": "t"},
    {"format": "senml-cbor"}, {"format": "senml-cbor", "field": "t", "type": "number"},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "x", "t", "n", "v", "vb", "bn", "bt", "u", "0"]), inner,
        max_size=4),
    max_leaves=12)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(kind=st.sampled_from(ALL_POINT_KINDS),
       payload=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode())
       | json_values.map(cbor2.dumps))
def test_garbage_gives_payload_errors_only(kind: dict[str, Any], payload: bytes) -> None:
    res = resource(kind)
    try:
        out = run(res, payload)
    except PayloadError:
        return
    for r in out.readings:
        assert isinstance(r.value, (bool, int, float, str, bytes))
        assert not (isinstance(r.value, float) and not math.isfinite(r.value))
    assert all(isinstance(e, PayloadError) for _, e in out.errors)


@pytest.mark.property
@settings(max_examples=examples(200))
@given(fmt=st.sampled_from(["text", "json", "cbor", "senml", "senml-cbor"]),
       scale=st.sampled_from([1.0, 0.1, 0.5, 2.0, 0.01]),
       value=st.integers(-10**6, 10**6) | st.floats(-1e6, 1e6, allow_nan=False))
def test_what_a_write_encodes_reads_back(fmt: str, scale: float, value: float) -> None:
    kw: dict[str, Any] = {"format": fmt, "writable": {"min": -1e6, "max": 1e6}}
    if fmt != "text":
        kw["field"] = "t"
    if scale != 1.0:
        kw["scale"] = scale
    res = resource(kw)
    payload, _ = encode_write(res.points[0], value, device="d")
    back = values(res, payload)["p0"]
    if scale == 1.0:
        assert back == value and type(back) is type(value)
    else:
        assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.property
@given(st.integers() | st.floats(allow_nan=False, allow_infinity=False))
def test_text_numbers_parse_back_exactly(value: float) -> None:
    text = repr(value) if isinstance(value, float) else str(value)
    parsed = parse_number(text)
    assert parsed == value and type(parsed) is type(value)
