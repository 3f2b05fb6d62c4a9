"""SenML codec (RFC 8428): exact encodings, round trips, splitting, malformed input."""

from __future__ import annotations

import importlib.metadata
import json
import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd import senml
from gatewayd.errors import ProtocolError
from gatewayd.reading import Reading
from tests.support.properties import examples

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z in ns
NS = 1_000_000_000

SAMPLE = [
    Reading("boiler", "flow_temp", 21.5, "Cel", T0),
    Reading("boiler", "pressure", 2, "bar", T0 + NS // 2),
    Reading("boiler", "pump_on", True, None, T0 + NS),
    Reading("door", "label", "open", None, T0 + 5 * NS // 4),
    Reading("tag", "raw", b"\xfb\xff\xfe\x00", None, T0 - NS // 4),
]


def test_json_encoding_is_exact() -> None:
    data = senml.encode(SAMPLE, gateway_id="gw-0001")
    assert data == (
        b'[{"bn":"urn:dev:gw:gw-0001:","bt":1700000000.0,"n":"boiler/flow_temp","u":"Cel",'
        b'"v":21.5},{"n":"boiler/pressure","u":"bar","v":2,"t":0.5},'
        b'{"n":"boiler/pump_on","vb":true,"t":1.0},{"n":"door/label","vs":"open","t":1.25},'
        b'{"n":"tag/raw","vd":"-__-AA","t":-0.25}]'
    )


def test_cbor_encoding_is_exact() -> None:
    one = senml.encode(SAMPLE[:1], gateway_id="g", fmt="cbor")
    assert one.hex() == (
        "81" "a5"  # array(1), map(5)
        "21" "6d" + b"urn:dev:gw:g:".hex() +  # bn (-2)
        "22" "fb" "41d954fc40000000"  # bt (-3): 1.7e9
        "00" "70" + b"boiler/flow_temp".hex() +  # n (0)
        "01" "63" + b"Cel".hex() +  # u (1)
        "02" "fb" "4035800000000000"  # v (2): 21.5
    )
    kinds = senml.encode([Reading("d", "p", b"\x01\x02", None, T0),
                          Reading("d", "q", True, "%", T0 + 1)], gateway_id="g", fmt="cbor")
    assert kinds.hex() == (
        "82" "a4" "21" "6d" + b"urn:dev:gw:g:".hex() + "22" "fb" "41d954fc40000000"
        "00" "63" + b"d/p".hex() + "08" "42" "0102"  # vd (8) is a byte string in CBOR
        + "a4" "00" "63" + b"d/q".hex() + "01" "61" "25" "04" "f5"  # vb (4): true
        "06" "fb" "3e112e0be826d695"  # t (6): 1e-9
    )


def test_cbor_and_json_carry_the_same_records() -> None:
    as_json = json.loads(senml.encode(SAMPLE, gateway_id="gw-0001"))
    as_cbor = cbor2.loads(senml.encode(SAMPLE, gateway_id="gw-0001", fmt="cbor"))
    names = {v: k for k, v in senml.CBOR_LABELS.items()}
    relabelled = [{names[k]: v for k, v in rec.items()} for rec in as_cbor]
    relabelled[4]["vd"] = "-__-AA"  # the one field whose representation differs
    assert relabelled == as_json


@pytest.mark.parametrize("fmt", ["json", "cbor"])
def test_round_trip_every_value_kind(fmt: str) -> None:
    decoded = senml.decode(senml.encode(SAMPLE, gateway_id="gw-0001", fmt=fmt), fmt=fmt)
    assert decoded == SAMPLE
    assert [type(r.value) for r in decoded] == [float, int, bool, str, bytes]


def test_decoded_times_keep_nanoseconds_relative_to_the_base_time() -> None:
    base = 1_795_462_573_221_733_377  # not representable exactly as float seconds
    readings = [Reading("d", "p", i, None, base + i) for i in range(3)]
    decoded = senml.decode(senml.encode(readings, gateway_id="g"))
    assert [r.time - decoded[0].time for r in decoded] == [0, 1, 2]
    assert abs(decoded[0].time - base) <= 1000


def test_non_finite_floats_travel_as_strings_in_json_and_as_floats_in_cbor() -> None:
    readings = [Reading("d", "a", math.nan, None, T0), Reading("d", "b", math.inf, "W", T0),
                Reading("d", "c", -math.inf, None, T0), Reading("d", "e", 1.5, None, T0)]
    data = senml.encode(readings, gateway_id="g")
    assert json.loads(data)[1] == {"n": "d/b", "u": "W", "vs": "Infinity"}
    assert [r.value for r in senml.decode(data)] == ["NaN", "Infinity", "-Infinity", 1.5]
    back = senml.decode(senml.encode(readings, gateway_id="g", fmt="cbor"), fmt="cbor")
    assert math.isnan(back[0].value)  # type: ignore[arg-type]
    assert [r.value for r in back[1:]] == [math.inf, -math.inf, 1.5]


def test_value_subclasses_encode_as_their_base_kind() -> None:
    import enum

    class Mode(enum.IntEnum):
        AUTO = 3

    data = senml.encode([Reading("d", "mode", Mode.AUTO, None, T0)], gateway_id="g")
    assert json.loads(data)[0]["v"] == 3


def test_encode_refuses_what_senml_cannot_carry() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        senml.encode([], gateway_id="g")
    with pytest.raises(ProtocolError, match="unknown SenML format 'xml'"):
        senml.encode(SAMPLE, gateway_id="g", fmt="xml")
    with pytest.raises(ProtocolError, match="type list"):
        senml.encode([Reading("d", "p", [1], None, T0)], gateway_id="g")  # type: ignore[arg-type]


# ------------------------------------------------------------------ splitting


def _many(n: int) -> list[Reading]:
    return [Reading(f"dev{i % 7}", f"p{i % 3}", i * 0.5, "Cel", T0 + i * 1000) for i in range(n)]


@pytest.mark.parametrize("fmt", ["json", "cbor"])
@pytest.mark.parametrize("max_bytes", [1024, 4096, 65536])
def test_packs_never_exceed_max_bytes_and_keep_every_reading_in_order(fmt: str,
                                                                      max_bytes: int) -> None:
    readings = _many(3000)
    packs = senml.encode_packs(readings, gateway_id="gw-0001", fmt=fmt, max_bytes=max_bytes)
    assert all(len(p.payload) <= max_bytes for p in packs)
    whole = len(senml.encode(readings, gateway_id="gw-0001", fmt=fmt))
    assert len(packs) >= math.ceil(whole / max_bytes)
    decoded = [r for p in packs for r in senml.decode(p.payload, fmt=fmt)]
    assert [p.count for p in packs] == [len(senml.decode(p.payload, fmt=fmt)) for p in packs]
    assert [(r.device, r.point, r.value, r.unit) for r in decoded] == \
        [(r.device, r.point, r.value, r.unit) for r in readings]
    # Each pack has its own float base time: absolute times agree within 1 µs.
    assert all(abs(d.time - r.time) <= 1000 for d, r in zip(decoded, readings, strict=True))
    assert senml.encode_pack(readings, gateway_id="gw-0001", fmt=fmt, max_bytes=max_bytes) == \
        [p.payload for p in packs]


def test_a_pack_that_fits_is_not_split() -> None:
    packs = senml.encode_packs(SAMPLE, gateway_id="g", max_bytes=10_000)
    assert len(packs) == 1
    assert packs[0].payload == senml.encode(SAMPLE, gateway_id="g")
    assert packs[0].count == 5
    assert senml.encode_packs([], gateway_id="g", max_bytes=10_000) == []


def test_a_single_oversized_record_goes_alone() -> None:
    big = Reading("d", "blob", "x" * 5000, None, T0)
    small = Reading("d", "n", 1, None, T0)
    packs = senml.encode_packs([small, big, small], gateway_id="g", max_bytes=1024)
    assert [p.count for p in packs] == [1, 1, 1]
    assert len(packs[1].payload) > 1024
    assert senml.decode(packs[1].payload) == [big]


# ------------------------------------------------------------------ decoding


def test_decoder_resolves_base_fields_per_rfc8428() -> None:
    data = json.dumps([
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "bu": "%RH", "bv": 10,
         "n": "air/humidity", "v": 20.5},
        {"n": "air/temp", "u": "Cel", "v": 3, "t": 60},
        {"n": "air/on", "vb": False, "t": -1.5},
    ]).encode()
    assert senml.decode(data) == [
        Reading("air", "humidity", 30.5, "%RH", 1_320_067_464 * NS),
        Reading("air", "temp", 13, "Cel", 1_320_067_524 * NS),
        Reading("air", "on", False, "%RH", 1_320_067_462_500_000_000),
    ]


def test_decoder_times_below_2_pow_28_are_relative_to_now() -> None:
    data = b'[{"n":"d/p","v":1,"t":-5},{"n":"d/p","v":2}]'
    now = 1_800_000_000 * NS
    assert [r.time for r in senml.decode(data, now_ns=now)] == [now - 5 * NS, now]


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "not valid JSON"),
    (b'{"n": "d/p"}', "a pack must be an array"),
    (b'[1]', "record 0: expected an object"),
    (b'[{"n": "d/p"}]', "record 0: no value"),
    (b'[{"n": "d/p", "v": 1, "vs": "x"}]', "record 0: several values (v, vs)"),
    (b'[{"n": "d/p", "v": "1"}]', "record 0: 'v' must be a number"),
    (b'[{"n": "d/p", "v": true}]', "record 0: 'v' must be a number"),
    (b'[{"n": "d/p", "vb": 1}]', "record 0: 'vb' must be a boolean"),
    (b'[{"n": "d/p", "vd": "***"}]', "record 0: 'vd' is not base64url"),
    (b'[{"n": 5, "v": 1}]', "record 0: 'n' must be a string"),
    (b'[{"n": "d/p", "v": 1}, {"n": "nodevice", "v": 1}]',
     "record 1: name 'nodevice' is not 'device/point'"),
    (b'[{"n": "d/p", "v": 1, "t": "soon"}]', "record 0: 't' must be a number"),
    (b'[{"n": "d/p", "v": 1, "bver": 99}]', "record 0: unsupported version 99"),
    (b'[{"n": "d/p", "v": 1, "crit_": 1}]', "record 0: unsupported label 'crit_'"),
])
def test_malformed_json_raises_protocol_error_naming_the_problem(data: bytes,
                                                                 message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        senml.decode(data)
    assert message in str(err.value)


CBOR2_MAJOR = int(importlib.metadata.version("cbor2").split(".")[0])


@pytest.mark.parametrize(("data", "message"), [
    # cbor2 6 refuses a lone "break"; cbor2 5 (Debian bookworm) reads it as a non-array
    (b"\xff\xff", "not valid CBOR" if CBOR2_MAJOR >= 6 else "a pack must be an array"),
    (cbor2.dumps({0: "d/p"}), "a pack must be an array"),
    (cbor2.dumps([{0: "d/p", 99: 1}]), "record 0: unknown label 99"),
    (cbor2.dumps([{0: "d/p", 8: "text"}]), "record 0: 'vd' must be a byte string"),
    (cbor2.dumps([[0, 1]]), "record 0: expected a map"),
])
def test_malformed_cbor_raises_protocol_error_naming_the_problem(data: bytes,
                                                                 message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        senml.decode(data, fmt="cbor")
    assert message in str(err.value)


def test_unknown_labels_without_underscore_are_ignored() -> None:
    assert senml.decode(b'[{"n":"d/p","v":1,"t":2e9,"foo":7}]') == \
        [Reading("d", "p", 1, None, 2_000_000_000 * NS)]


# ------------------------------------------------------------------ properties

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=30),
    st.binary(max_size=30),
)
_times = st.integers(min_value=2**28 * NS, max_value=4_000_000_000 * NS)
_readings = st.builds(Reading, _names, _names, _values, st.one_of(st.none(), _names), _times)
_DAY = 86_400 * NS


@st.composite
def _pack_of_one_day(draw: st.DrawFn) -> list[Reading]:
    """Readings spread over at most a day, as the buffer hands them out."""
    base = draw(_times)
    offsets = draw(st.lists(st.integers(min_value=-_DAY, max_value=_DAY), min_size=1,
                            max_size=40))
    return [Reading(draw(_names), draw(_names), draw(_values), draw(st.one_of(st.none(), _names)),
                    base + off) for off in offsets]


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(_pack_of_one_day(), st.sampled_from(["json", "cbor"]))
def test_round_trip_property(readings: list[Reading], fmt: str) -> None:
    decoded = senml.decode(senml.encode(readings, gateway_id="gw-0001", fmt=fmt), fmt=fmt)
    assert [(r.device, r.point, r.value, r.unit) for r in decoded] == \
        [(r.device, r.point, r.value, r.unit) for r in readings]
    assert [type(r.value) for r in decoded] == [type(r.value) for r in readings]
    # Absolute times within 1 µs (float seconds); offsets within a pack (a day) exact.
    assert all(abs(d.time - r.time) <= 1000 for d, r in zip(decoded, readings, strict=True))
    assert [d.time - decoded[0].time for d in decoded] == \
        [r.time - readings[0].time for r in readings]


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_readings, min_size=1, max_size=40), st.sampled_from(["json", "cbor"]))
def test_round_trip_property_any_times(readings: list[Reading], fmt: str) -> None:
    decoded = senml.decode(senml.encode(readings, gateway_id="gw-0001", fmt=fmt), fmt=fmt)
    assert [(r.device, r.point, r.value, r.unit) for r in decoded] == \
        [(r.device, r.point, r.value, r.unit) for r in readings]
    assert all(abs(d.time - r.time) <= 1000 for d, r in zip(decoded, readings, strict=True))


@pytest.mark.property
@settings(max_examples=examples(100), deadline=None)
@given(st.lists(_readings, min_size=1, max_size=60), st.integers(min_value=300, max_value=3000),
       st.sampled_from(["json", "cbor"]))
def test_splitting_property(readings: list[Reading], max_bytes: int, fmt: str) -> None:
    packs = senml.encode_packs(readings, gateway_id="g", fmt=fmt, max_bytes=max_bytes)
    assert sum(p.count for p in packs) == len(readings)
    assert all(len(p.payload) <= max_bytes or p.count == 1 for p in packs)
    decoded = [r for p in packs for r in senml.decode(p.payload, fmt=fmt)]
    assert [(r.device, r.point, r.value) for r in decoded] == \
        [(r.device, r.point, r.value) for r in readings]


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_protocol_error(data: bytes) -> None:
    for fmt in ("json", "cbor"):
        try:
            senml.decode(data, fmt=fmt)
        except ProtocolError:
            pass



_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                     st.sampled_from(["urn:dev:gw:g:", "a/b", "a/", "/b", "", "Cel"]),
                     st.sampled_from([1e300, -1.7e308, 2**63, 2**28, -2**28, 1e-300]))
_records = st.dictionaries(
    st.sampled_from(["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s",
                     "t", "ut", "x"]), _scalars, max_size=6)


def _encoded(pack: object, fmt: str) -> bytes | None:
    try:
        return cbor2.dumps(pack) if fmt == "cbor" else json.dumps(pack).encode()
    except (ValueError, TypeError):
        return None


@pytest.mark.property
@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.lists(_records, max_size=5), _records, _scalars),
       st.sampled_from(["json", "cbor"]))
def test_senml_shaped_garbage_only_raises_protocol_error(pack: object, fmt: str) -> None:
    """Records with every SenML field, each of any type: readings or a ProtocolError."""
    data = _encoded(pack, fmt)
    if data is None:
        return
    try:
        readings = senml.decode(data, fmt=fmt)
    except ProtocolError:
        return
    for r in readings:
        assert isinstance(r, Reading) and r.device and r.point


@pytest.mark.property
@settings(max_examples=examples(30), deadline=None)
@given(st.integers(1, 30_000))
def test_nesting_deeper_than_the_parsers_allow_is_a_protocol_error(depth: int) -> None:
    for data, fmt in ((b"[" * depth + b"]" * depth, "json"),
                      (b"\x81" * depth + b"\x80", "cbor")):
        try:
            senml.decode(data, fmt=fmt)
        except ProtocolError:
            pass
