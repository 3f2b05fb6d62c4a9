"""Property tests and fuzzing: garbage in gives a named error, never another exception."""

from __future__ import annotations

import struct

import pytest
from gatewayd.drivers.ble import bthome, pvvx, ruuvi
from gatewayd.drivers.ble.errors import AdvertisementError
from gatewayd.drivers.ble.gatt import Layout, decode_value, encode_value
from gatewayd.drivers.ble.packet import Packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.properties import examples

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = bytes.fromhex("5448E68F80A5")
FUZZ = settings(max_examples=examples(400), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_named_error(fn, data: bytes, **kw) -> None:
    try:
        packet = fn(data, **kw)
    except AdvertisementError:
        return
    assert isinstance(packet, Packet)


@pytest.mark.property
@FUZZ
@given(st.binary(max_size=40))
def test_bthome_garbage(data: bytes) -> None:
    _decodes_or_named_error(bthome.decode_bthome, data)
    _decodes_or_named_error(bthome.decode_bthome, data, mac=MAC, bindkey=KEY)


@pytest.mark.property
@FUZZ
@given(st.binary(max_size=30))
def test_bthome_v2_bodies(body: bytes) -> None:
    # mostly valid headers, so the object parser sees the garbage
    _decodes_or_named_error(bthome.decode_bthome, b"\x40" + body)
    _decodes_or_named_error(bthome.decode_bthome, b"\x41" + body, mac=MAC, bindkey=KEY)


@pytest.mark.property
@FUZZ
@given(st.binary(max_size=40))
def test_ruuvi_garbage(data: bytes) -> None:
    _decodes_or_named_error(ruuvi.decode_ruuvi, data)
    _decodes_or_named_error(ruuvi.decode_ruuvi, b"\x05" + data[:23], mac=MAC)


@pytest.mark.property
@FUZZ
@given(st.binary(max_size=20))
def test_pvvx_garbage(data: bytes) -> None:
    _decodes_or_named_error(pvvx.decode_pvvx, data)
    _decodes_or_named_error(pvvx.decode_pvvx, data, mac=MAC)


@pytest.mark.property
@FUZZ
@given(st.binary(max_size=12), st.sampled_from(["<h", "<H", "<f", "<2xB", "utf8", "bytes", "?"]))
def test_gatt_garbage(data: bytes, layout: str) -> None:
    try:
        decode_value(Layout(layout), data)
    except AdvertisementError:
        pass


# ---- round trips: what a sensor encodes decodes to the same values ----------------

@pytest.mark.property
@given(temp=st.integers(-32767, 32767), hum=st.integers(0, 10000), packet_id=st.integers(0, 255),
       counter=st.integers(0, 2**32 - 1))
def test_bthome_encrypted_round_trip(temp: int, hum: int, packet_id: int, counter: int) -> None:
    objects = bytes([0x00, packet_id, 0x02]) + struct.pack("<h", temp) + b"\x03" + \
        struct.pack("<H", hum)
    payload = bthome.encrypt_bthome(objects, mac=MAC, bindkey=KEY, counter=counter)
    packet = bthome.decode_bthome(payload, mac=MAC, bindkey=KEY)
    assert packet.counter == counter and packet.sequence == packet_id
    assert {m.name: m.value for m in packet.measurements} == {
        "temperature": round(temp * 0.01, 2), "humidity": round(hum * 0.01, 2)}


@pytest.mark.property
@given(temp=st.integers(-32767, 32767), hum=st.integers(0, 40000),
       pressure=st.integers(0, 65534), seq=st.integers(0, 65534))
def test_ruuvi_round_trip(temp: int, hum: int, pressure: int, seq: int) -> None:
    data = struct.pack(">BhHHhhhHBH6s", 5, temp, hum, pressure, 0, 0, 0, 0, 0, seq, MAC)
    values = {m.name: m.value for m in ruuvi.decode_ruuvi(data, mac=MAC).measurements}
    assert values["temperature"] == round(temp * 0.005, 3)
    assert values["humidity"] == round(hum * 0.0025, 4)
    assert values["pressure"] == pressure + 50000


@pytest.mark.property
@given(st.integers(-32768, 32767), st.sampled_from([1.0, 0.01, 0.1]))
def test_gatt_write_round_trip(raw: int, scale: float) -> None:
    layout = Layout("<h", scale=scale)
    value = decode_value(layout, struct.pack("<h", raw))
    assert encode_value(layout, value) == struct.pack("<h", raw)
