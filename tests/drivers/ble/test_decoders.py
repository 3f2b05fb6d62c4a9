"""The pure decoders against the published examples of each specification."""

from __future__ import annotations

import pytest
from gatewayd.drivers.ble import bthome, pvvx, ruuvi
from gatewayd.drivers.ble.adverts import AdvertFilter
from gatewayd.drivers.ble.errors import (
    AddressMismatch,
    DecryptionFailed,
    EncryptionRequired,
    InvalidField,
    MissingBindkey,
    ReplayedCounter,
    TruncatedPayload,
    UnsupportedPayload,
)
from gatewayd.drivers.ble.packet import Measurement, parse_mac


def values(packet) -> dict[str, object]:
    return {m.name: m.value for m in packet.measurements}


def units(packet) -> dict[str, object]:
    return {m.name: m.unit for m in packet.measurements}


# ---- BTHome v2 ---------------------------------------------------------------------

def test_bthome_format_page_example() -> None:
    # bthome.io/format: service data D2FC 40 02C409 03BF13
    packet = bthome.decode_bthome(bytes.fromhex("4002C40903BF13"))
    assert packet.measurements == (Measurement("temperature", 25.0, "Cel"),
                                   Measurement("humidity", 50.55, "%RH"))
    assert packet.sequence is None and not packet.encrypted and packet.stopped_at is None


# Every example of the specification's tables: object bytes -> (name, value).
SPEC_EXAMPLES = [
    ("518756", "acceleration", 22.151), ("0161", "battery", 97), ("12E204", "co2", 1250),
    ("56E803", "conductivity", 1000), ("0960", "count", 96), ("3D0960", "count", 24585),
    ("3E2A2C0960", "count", 1611213866), ("59EA", "count", -22), ("5AEAEA", "count", -5398),
    ("5BEA0234EA", "count", -365690134), ("434E34", "current", 13.39),
    ("5D02EA", "current", -5.63), ("08CA06", "dewpoint", 17.38), ("400C00", "distance", 12),
    ("414E00", "distance", 7.8), ("424E3400", "duration", 13.39),
    ("4d12138a14", "energy", 344593.17), ("0A138A14", "energy", 1346.067),
    ("4B138A14", "gas", 1346.067), ("4C41018A01", "gas", 25821.505),
    ("528756", "gyroscope", 22.151), ("03BF13", "humidity", 50.55), ("2E23", "humidity", 35),
    ("05138A14", "illuminance", 13460.67), ("065E1F", "mass", 80.3), ("073E1D", "mass", 74.86),
    ("14020C", "moisture", 30.74), ("2F23", "moisture", 35), ("0D120C", "pm2_5", 3090),
    ("0E021C", "pm10", 7170), ("0B021B00", "power", 69.14), ("5C02FBFFFF", "power", -12.78),
    ("04138A01", "pressure", 1008.83), ("3F020C", "rotation", 307.4),
    ("444E34", "speed", 133.9), ("57EA", "temperature", -22), ("58EA", "temperature", -7.7),
    ("451101", "temperature", 27.3), ("02CA09", "temperature", 25.06),
    ("133301", "tvoc", 307), ("0C020C", "voltage", 3.074), ("4A020C", "voltage", 307.4),
    ("4E87562A01", "volume", 19551.879), ("478756", "volume", 2215.1),
    ("48DC87", "volume", 34780), ("5587562A01", "volume_storage", 19551.879),
    ("49DC87", "volume_flow_rate", 34.78), ("4632", "uv_index", 5.0),
    ("4F87562A01", "water", 19551.879), ("5E9F8C", "direction", 359.99),
    ("505d396164", "timestamp", 1684093277),
    ("530C48656C6C6F20576F726C6421", "text", "Hello World!"),
    ("540C48656C6C6F20576F726C6421", "raw", b"Hello World!"),
    # binary sensors
    ("1501", "battery_low", True), ("1601", "battery_charging", True),
    ("1700", "carbon_monoxide", False), ("1801", "cold", True), ("1900", "connectivity", False),
    ("1A00", "door", False), ("1B01", "garage_door", True), ("1C01", "gas_detected", True),
    ("0F01", "generic", True), ("1D00", "heat", False), ("1E01", "light_detected", True),
    ("1F01", "lock", True), ("2001", "moisture_detected", True), ("2100", "motion", False),
    ("2201", "moving", True), ("2301", "occupancy", True), ("1100", "opening", False),
    ("2400", "plug", False), ("1001", "power_on", True), ("2500", "presence", False),
    ("2601", "problem", True), ("2701", "running", True), ("2800", "safety", False),
    ("2901", "smoke", True), ("2A00", "sound", False), ("2B00", "tamper", False),
    ("2C01", "vibration", True), ("2D01", "window", True),
    # events and device information
    ("3A01", "button", "press"), ("3A02", "button", "double_press"),
    ("3A03", "button", "triple_press"), ("3A04", "button", "long_press"),
    ("3A05", "button", "long_double_press"), ("3A06", "button", "long_triple_press"),
    ("3A80", "button", "hold_press"), ("3C0103", "dimmer", "rotate_left"),
    ("3C020A", "dimmer", "rotate_right"), ("F00100", "device_type_id", 1),
    ("F100010204", "firmware_version", "4.2.1.0"), ("F2000106", "firmware_version", "6.1.0"),
]


@pytest.mark.parametrize(("objects", "name", "value"), SPEC_EXAMPLES,
                         ids=[f"{o[:2]}-{n}" for o, n, _ in SPEC_EXAMPLES])
def test_bthome_spec_table_examples(objects: str, name: str, value: object) -> None:
    packet = bthome.decode_bthome(bytes.fromhex("40" + objects))
    assert packet.measurements[0].name == name
    assert packet.measurements[0].value == value
    assert type(packet.measurements[0].value) is type(value)


def test_bthome_objects_of_newer_revisions() -> None:
    # 0x5F precipitation (0.1 mm), 0x60 channel, 0x61 rotational speed, 0x62 speed and
    # 0x63 acceleration (sint32, 0.000001), 0x64 light level: vectors made from the
    # object table (the specification gives no example for them).
    packet = bthome.decode_bthome(bytes.fromhex("40" "5FA00F" "6003" "61B004" "6240420F00"
                                                "63C0BDF0FF" "6405"))
    assert values(packet) == {"precipitation": 400.0, "channel": 3, "rotational_speed": 1200,
                              "speed": 1.0, "acceleration": -1.0, "light_level": 5}
    assert units(packet)["rotational_speed"] == "1/min"


def test_bthome_every_object_id_has_a_decoding() -> None:
    for object_id, spec in bthome.OBJECTS.items():
        length = 1 if spec.kind in ("text", "raw") else spec.length
        body = bytes([object_id]) + (bytes([0]) if spec.kind in ("text", "raw") else
                                     bytes(length))
        packet = bthome.decode_bthome(b"\x40" + body)  # no error for any known id
        if spec.kind == "packet_id":
            assert packet.sequence == 0
        elif spec.kind in ("button", "dimmer"):
            assert packet.measurements == ()  # event 0 is "no event"
        else:
            assert spec.name in [m.name for m in packet.measurements], hex(object_id)


def test_bthome_multiple_objects_and_postfix() -> None:
    packet = bthome.decode_bthome(bytes.fromhex("40" "0009" "0161" "02CA09" "02C409" "3A00"
                                                "3A01" "3C0103"))
    assert packet.sequence == 9
    assert values(packet) == {"battery": 97, "temperature": 25.06, "temperature_2": 25.0,
                              "button_2": "press", "dimmer": "rotate_left", "dimmer_steps": 3}


def test_bthome_stops_at_an_unknown_object_id() -> None:
    packet = bthome.decode_bthome(bytes.fromhex("40" "02CA09" "FE0102" "0161"))
    assert values(packet) == {"temperature": 25.06}
    assert packet.stopped_at == 0xFE


@pytest.mark.parametrize(("hex_payload", "error"), [
    ("", TruncatedPayload),
    ("4002CA", TruncatedPayload),
    ("4053", TruncatedPayload),
    ("40530548", TruncatedPayload),
    ("2002CA09", UnsupportedPayload),  # BTHome v1 information byte
    ("6002CA09", UnsupportedPayload),  # version 3
    ("401502", InvalidField),
    ("403A07", InvalidField),
    ("40530280FF", InvalidField),
])
def test_bthome_garbage_gives_named_errors(hex_payload: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        bthome.decode_bthome(bytes.fromhex(hex_payload))


# The encryption page's example: key, MAC, counter 0x00112233 and the service data.
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = parse_mac("54:48:E6:8F:80:A5")
ENCRYPTED = bytes.fromhex("41e445f3c9962b332211006c7c4519")  # after the UUID d2fc


def test_bthome_encrypted_spec_example() -> None:
    packet = bthome.decode_bthome(ENCRYPTED, mac=MAC, bindkey=KEY)
    assert values(packet) == {"temperature": 25.06, "humidity": 50.55}
    assert packet.encrypted and packet.counter == 1122867


def test_bthome_encrypt_reproduces_the_spec_example() -> None:
    assert bthome.encrypt_bthome(bytes.fromhex("02CA0903BF13"), mac=MAC, bindkey=KEY,
                                 counter=1122867) == ENCRYPTED


def test_bthome_encryption_errors() -> None:
    with pytest.raises(MissingBindkey):
        bthome.decode_bthome(ENCRYPTED, mac=MAC)
    with pytest.raises(DecryptionFailed):
        bthome.decode_bthome(ENCRYPTED, mac=MAC, bindkey=bytes(16))
    with pytest.raises(DecryptionFailed):  # the nonce holds the MAC: another sender fails
        bthome.decode_bthome(ENCRYPTED, mac=parse_mac("54:48:E6:8F:80:A6"), bindkey=KEY)
    tampered = bytearray(ENCRYPTED)
    tampered[3] ^= 1
    with pytest.raises(DecryptionFailed):
        bthome.decode_bthome(bytes(tampered), mac=MAC, bindkey=KEY)
    with pytest.raises(TruncatedPayload):
        bthome.decode_bthome(ENCRYPTED[:8], mac=MAC, bindkey=KEY)
    with pytest.raises(EncryptionRequired):  # plaintext from a device with a key
        bthome.decode_bthome(bytes.fromhex("4002CA09"), mac=MAC, bindkey=KEY)


def test_counter_replay_and_repeats() -> None:
    f = AdvertFilter(window=60.0)
    first = bthome.decode_bthome(ENCRYPTED, mac=MAC, bindkey=KEY)
    assert f.accept(first, now=0.0)
    assert not f.accept(first, now=1.0)  # the same packet heard again
    newer = bthome.decode_bthome(bthome.encrypt_bthome(bytes.fromhex("02CB09"), mac=MAC,
                                                       bindkey=KEY, counter=1122868),
                                 mac=MAC, bindkey=KEY)
    assert f.accept(newer, now=2.0)
    with pytest.raises(ReplayedCounter) as err:
        f.accept(first, now=3.0)  # recorded earlier, sent again
    assert (err.value.counter, err.value.last) == (1122867, 1122868)


def test_packet_id_and_value_deduplication() -> None:
    f = AdvertFilter(window=60.0)
    p1 = bthome.decode_bthome(bytes.fromhex("40000902CA09"))
    p1_again = bthome.decode_bthome(bytes.fromhex("40000902CA09"))
    p2 = bthome.decode_bthome(bytes.fromhex("40000A02CA09"))
    assert [f.accept(p, now=t) for p, t in ((p1, 0), (p1_again, 1), (p2, 2))] == \
        [True, False, True]
    g = AdvertFilter(window=10.0)  # no packet id: same values within the window repeat
    plain = bthome.decode_bthome(bytes.fromhex("4002CA09"))
    assert [g.accept(plain, now=t) for t in (0.0, 5.0, 10.0)] == [True, False, True]


# ---- Ruuvi RAWv2 -------------------------------------------------------------------

RUUVI_MAC = parse_mac("CB:B8:33:4C:88:4F")


def test_ruuvi_valid_data() -> None:
    packet = ruuvi.decode_ruuvi(bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"),
                                mac=RUUVI_MAC)
    assert values(packet) == pytest.approx({
        "temperature": 24.3, "humidity": 53.49, "pressure": 100044,
        "acceleration_x": 0.004 * 9.80665, "acceleration_y": -0.004 * 9.80665,
        "acceleration_z": 1.036 * 9.80665, "battery_voltage": 2.977, "tx_power": 4,
        "movement_counter": 66})
    assert packet.sequence == 205
    assert units(packet)["pressure"] == "Pa"


def test_ruuvi_maximum_values() -> None:
    packet = ruuvi.decode_ruuvi(bytes.fromhex("057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F"))
    assert values(packet) == pytest.approx({
        "temperature": 163.835, "humidity": 163.835, "pressure": 115534,
        "acceleration_x": 32.767 * 9.80665, "acceleration_y": 32.767 * 9.80665,
        "acceleration_z": 32.767 * 9.80665, "battery_voltage": 3.646, "tx_power": 20,
        "movement_counter": 254})
    assert packet.sequence == 65534


def test_ruuvi_minimum_values() -> None:
    packet = ruuvi.decode_ruuvi(bytes.fromhex("058001000000008001800180010000000000CBB8334C884F"))
    assert values(packet) == pytest.approx({
        "temperature": -163.835, "humidity": 0.0, "pressure": 50000,
        "acceleration_x": -32.767 * 9.80665, "acceleration_y": -32.767 * 9.80665,
        "acceleration_z": -32.767 * 9.80665, "battery_voltage": 1.6, "tx_power": -40,
        "movement_counter": 0})
    assert packet.sequence == 0


def test_ruuvi_invalid_values_are_left_out() -> None:
    packet = ruuvi.decode_ruuvi(bytes.fromhex("058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF"),
                                mac=RUUVI_MAC)
    assert packet.measurements == ()
    assert packet.sequence is None


def test_ruuvi_errors() -> None:
    valid = bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")
    with pytest.raises(AddressMismatch):
        ruuvi.decode_ruuvi(valid, mac=parse_mac("CB:B8:33:4C:88:40"))
    with pytest.raises(UnsupportedPayload):
        ruuvi.decode_ruuvi(bytes.fromhex("03291A1ECE1EFC18F94202CA0B53"))  # RAWv1 vector
    with pytest.raises(TruncatedPayload):
        ruuvi.decode_ruuvi(valid[:-1])
    with pytest.raises(InvalidField):
        ruuvi.decode_ruuvi(valid + b"\x00")
    with pytest.raises(TruncatedPayload):
        ruuvi.decode_ruuvi(b"")


# ---- pvvx / atc1441 ----------------------------------------------------------------

PVVX_MAC = parse_mac("A4:C1:38:0B:5E:ED")
# pvvx custom: MAC reversed, 22.48 Cel, 67.64 %RH, 3014 mV, 100 %, counter 27,
# flags: reed switch + temperature trigger. Built from the struct the firmware
# documents (pvvx publishes no test vector).
PVVX = bytes.fromhex("ED5E0B38C1A4" "C808" "6C1A" "C60B" "64" "1B" "09")
ATC = bytes.fromhex("A4C1380B5EED" "00E0" "43" "5A" "0BB8" "2A")


def test_pvvx_custom_format() -> None:
    packet = pvvx.decode_pvvx(PVVX, mac=PVVX_MAC)
    assert values(packet) == {
        "temperature": 22.48, "humidity": 67.64, "battery_voltage": 3.014, "battery": 100,
        "reed_switch": True, "trigger_output": False, "trigger_controls_output": False,
        "temperature_trigger": True, "humidity_trigger": False}
    assert packet.sequence == 27
    assert units(packet)["temperature"] == "Cel"


def test_atc1441_format() -> None:
    packet = pvvx.decode_pvvx(ATC, mac=PVVX_MAC)
    assert values(packet) == {"temperature": 22.4, "humidity": 67, "battery_voltage": 3.0,
                              "battery": 90}
    assert packet.sequence == 42


def test_pvvx_negative_temperature_and_errors() -> None:
    cold = bytearray(PVVX)
    cold[6:8] = (-1234).to_bytes(2, "little", signed=True)
    assert values(pvvx.decode_pvvx(bytes(cold)))["temperature"] == -12.34
    with pytest.raises(AddressMismatch):
        pvvx.decode_pvvx(PVVX, mac=parse_mac("A4:C1:38:0B:5E:EE"))
    with pytest.raises(TruncatedPayload):
        pvvx.decode_pvvx(PVVX[:12])
    with pytest.raises(InvalidField):
        pvvx.decode_pvvx(PVVX + b"\x00")
    bad_battery = bytearray(PVVX)
    bad_battery[12] = 101
    with pytest.raises(InvalidField):
        pvvx.decode_pvvx(bytes(bad_battery))
