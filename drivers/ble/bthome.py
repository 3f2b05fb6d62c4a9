"""BTHome v2 (https://bthome.io/format/): service data of UUID 0xFCD2, no I/O.

:func:`decode_bthome` takes the service data after the UUID: the device
information byte, then objects (id, value) in little-endian, or, when bit 0 of
the information byte is set, ``ciphertext | counter (4, LE) | MIC (4)``
encrypted with AES-CCM under the device's bind key; the nonce is the sender's
MAC address, the UUID (``D2 FC``), the information byte and the counter.

Every object id of the specification is known: sensor values scaled by their
factor, binary sensors as booleans, button and dimmer events as strings, text,
raw bytes, timestamp, device type and firmware version. A second object of the
same kind gets the postfix ``_2`` (``temperature_2``), as the specification
says. Parsing stops at the first unknown object id, keeping what came before
(the specification's rule for receivers older than the sender); a truncated
object rejects the whole packet. The packet id (object 0x00) is returned as
``sequence`` for de-duplication, not as a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from .errors import (
    DecryptionFailed,
    EncryptionRequired,
    InvalidField,
    MissingBindkey,
    TruncatedPayload,
    UnsupportedPayload,
)
from .packet import Measurement, Packet

FORMAT = "bthome"
SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
UUID_BYTES = b"\xd2\xfc"  # 0xFCD2, little-endian as it is sent
ENCRYPTED = 0x01
TRIGGER_BASED = 0x04
VERSION_SHIFT = 5
MIC_LENGTH = 4
COUNTER_LENGTH = 4


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One object id: how long its value is and what it means."""

    name: str
    kind: str  # number | binary | packet_id | button | dimmer | text | raw | timestamp
    #          | device_type | firmware4 | firmware3
    length: int = 1
    signed: bool = False
    factor: float = 1.0
    decimals: int = 0  # of the scaled value (the factor's resolution)
    unit: str | None = None


def _n(name: str, length: int, factor: float = 1.0, decimals: int = 0, unit: str | None = None,
       *, signed: bool = False) -> ObjectSpec:
    return ObjectSpec(name, "number", length, signed, factor, decimals, unit)


def _b(name: str) -> ObjectSpec:
    return ObjectSpec(name, "binary")


# Object ids of the BTHome v2 specification (sensor data, binary sensor data,
# events, device information, misc data). Names are the specification's
# property names in snake case; binary sensors whose name a sensor already
# uses get a distinguishing one (battery_low, gas_detected, moisture_detected,
# light_detected, power_on). Units are SenML names where one exists.
OBJECTS: dict[int, ObjectSpec] = {
    0x00: ObjectSpec("packet_id", "packet_id"),
    0x01: _n("battery", 1, unit="%"),
    0x02: _n("temperature", 2, 0.01, 2, "Cel", signed=True),
    0x03: _n("humidity", 2, 0.01, 2, "%RH"),
    0x04: _n("pressure", 3, 0.01, 2, "hPa"),
    0x05: _n("illuminance", 3, 0.01, 2, "lx"),
    0x06: _n("mass", 2, 0.01, 2, "kg"),
    0x07: _n("mass", 2, 0.01, 2, "lb"),
    0x08: _n("dewpoint", 2, 0.01, 2, "Cel", signed=True),
    0x09: _n("count", 1),
    0x0A: _n("energy", 3, 0.001, 3, "kWh"),
    0x0B: _n("power", 3, 0.01, 2, "W"),
    0x0C: _n("voltage", 2, 0.001, 3, "V"),
    0x0D: _n("pm2_5", 2, unit="ug/m3"),
    0x0E: _n("pm10", 2, unit="ug/m3"),
    0x0F: _b("generic"),
    0x10: _b("power_on"),
    0x11: _b("opening"),
    0x12: _n("co2", 2, unit="ppm"),
    0x13: _n("tvoc", 2, unit="ug/m3"),
    0x14: _n("moisture", 2, 0.01, 2, "%"),
    0x15: _b("battery_low"),
    0x16: _b("battery_charging"),
    0x17: _b("carbon_monoxide"),
    0x18: _b("cold"),
    0x19: _b("connectivity"),
    0x1A: _b("door"),
    0x1B: _b("garage_door"),
    0x1C: _b("gas_detected"),
    0x1D: _b("heat"),
    0x1E: _b("light_detected"),
    0x1F: _b("lock"),
    0x20: _b("moisture_detected"),
    0x21: _b("motion"),
    0x22: _b("moving"),
    0x23: _b("occupancy"),
    0x24: _b("plug"),
    0x25: _b("presence"),
    0x26: _b("problem"),
    0x27: _b("running"),
    0x28: _b("safety"),
    0x29: _b("smoke"),
    0x2A: _b("sound"),
    0x2B: _b("tamper"),
    0x2C: _b("vibration"),
    0x2D: _b("window"),
    0x2E: _n("humidity", 1, unit="%RH"),
    0x2F: _n("moisture", 1, unit="%"),
    0x3A: ObjectSpec("button", "button"),
    0x3C: ObjectSpec("dimmer", "dimmer", 2),
    0x3D: _n("count", 2),
    0x3E: _n("count", 4),
    0x3F: _n("rotation", 2, 0.1, 1, "deg", signed=True),
    0x40: _n("distance", 2, unit="mm"),
    0x41: _n("distance", 2, 0.1, 1, "m"),
    0x42: _n("duration", 3, 0.001, 3, "s"),
    0x43: _n("current", 2, 0.001, 3, "A"),
    0x44: _n("speed", 2, 0.01, 2, "m/s"),
    0x45: _n("temperature", 2, 0.1, 1, "Cel", signed=True),
    0x46: _n("uv_index", 1, 0.1, 1),
    0x47: _n("volume", 2, 0.1, 1, "l"),
    0x48: _n("volume", 2, unit="ml"),
    0x49: _n("volume_flow_rate", 2, 0.001, 3, "m3/h"),
    0x4A: _n("voltage", 2, 0.1, 1, "V"),
    0x4B: _n("gas", 3, 0.001, 3, "m3"),
    0x4C: _n("gas", 4, 0.001, 3, "m3"),
    0x4D: _n("energy", 4, 0.001, 3, "kWh"),
    0x4E: _n("volume", 4, 0.001, 3, "l"),
    0x4F: _n("water", 4, 0.001, 3, "l"),
    0x50: ObjectSpec("timestamp", "timestamp", 4, unit="s"),
    0x51: _n("acceleration", 2, 0.001, 3, "m/s2"),
    0x52: _n("gyroscope", 2, 0.001, 3, "deg/s"),
    0x53: ObjectSpec("text", "text", 0),
    0x54: ObjectSpec("raw", "raw", 0),
    0x55: _n("volume_storage", 4, 0.001, 3, "l"),
    0x56: _n("conductivity", 2, unit="uS/cm"),
    0x57: _n("temperature", 1, unit="Cel", signed=True),
    0x58: _n("temperature", 1, 0.35, 2, "Cel", signed=True),
    0x59: _n("count", 1, signed=True),
    0x5A: _n("count", 2, signed=True),
    0x5B: _n("count", 4, signed=True),
    0x5C: _n("power", 4, 0.01, 2, "W", signed=True),
    0x5D: _n("current", 2, 0.001, 3, "A", signed=True),
    0x5E: _n("direction", 2, 0.01, 2, "deg"),
    0x5F: _n("precipitation", 2, 0.1, 1, "mm"),
    0x60: _n("channel", 1),
    0x61: _n("rotational_speed", 2, unit="1/min"),
    0x62: _n("speed", 4, 0.000001, 6, "m/s", signed=True),
    0x63: _n("acceleration", 4, 0.000001, 6, "m/s2", signed=True),
    0x64: _n("light_level", 1),
    0xF0: ObjectSpec("device_type_id", "device_type", 2),
    0xF1: ObjectSpec("firmware_version", "firmware4", 4),
    0xF2: ObjectSpec("firmware_version", "firmware3", 3),
}

BUTTON_EVENTS = {
    0x00: None, 0x01: "press", 0x02: "double_press", 0x03: "triple_press",
    0x04: "long_press", 0x05: "long_double_press", 0x06: "long_triple_press",
    0x80: "hold_press",
}
DIMMER_EVENTS = {0x00: None, 0x01: "rotate_left", 0x02: "rotate_right"}


def decode_bthome(payload: bytes, *, mac: bytes | None = None,
                  bindkey: bytes | None = None) -> Packet:
    """Decode BTHome v2 service data (the bytes after the UUID).

    ``mac`` (6 bytes) and ``bindkey`` (16 bytes) are needed for encrypted
    payloads. When a bind key is given, unencrypted payloads are refused.

    Raises TruncatedPayload, UnsupportedPayload, InvalidField, MissingBindkey,
    EncryptionRequired or DecryptionFailed (all AdvertisementError).
    """
    data = bytes(payload)
    if not data:
        raise TruncatedPayload("empty payload; expected the device information byte",
                               format=FORMAT)
    info = data[0]
    version = info >> VERSION_SHIFT
    if version != 2:
        raise UnsupportedPayload(f"BTHome version {version} (device information byte "
                                 f"0x{info:02x}); only version 2 is supported", format=FORMAT)
    counter = None
    body = data[1:]
    encrypted = bool(info & ENCRYPTED)
    if encrypted:
        if bindkey is None:
            raise MissingBindkey("payload is encrypted; configure the device's bindkey_file",
                                 format=FORMAT)
        body, counter = _decrypt(info, body, mac=mac, bindkey=bindkey)
    elif bindkey is not None:
        raise EncryptionRequired("payload is not encrypted but a bind key is configured",
                                 format=FORMAT)
    measurements, sequence, stopped_at = _objects(body)
    return Packet(FORMAT, measurements, sequence=sequence, counter=counter, encrypted=encrypted,
                  stopped_at=stopped_at)


def _nonce(mac: bytes, info: int, counter: bytes) -> bytes:
    return mac + UUID_BYTES + bytes([info]) + counter


def _decrypt(info: int, body: bytes, *, mac: bytes | None, bindkey: bytes) -> tuple[bytes, int]:
    if len(bindkey) != 16:
        raise ValueError("a BTHome bind key is 16 bytes")
    if len(body) < COUNTER_LENGTH + MIC_LENGTH + 1:
        raise TruncatedPayload(f"encrypted payload of {len(body)} bytes after the device "
                               "information byte; expected ciphertext, a 4-byte counter and "
                               "a 4-byte MIC", format=FORMAT)
    if mac is None or len(mac) != 6:
        raise DecryptionFailed("the sender's MAC address is needed to decrypt", format=FORMAT)
    ciphertext = body[:-(COUNTER_LENGTH + MIC_LENGTH)]
    counter = body[-(COUNTER_LENGTH + MIC_LENGTH):-MIC_LENGTH]
    mic = body[-MIC_LENGTH:]
    try:
        plain = AESCCM(bindkey, tag_length=MIC_LENGTH).decrypt(
            _nonce(mac, info, counter), ciphertext + mic, None)
    except InvalidTag:
        raise DecryptionFailed("message integrity check failed (wrong bind key, or a forged "
                               "or corrupt packet)", format=FORMAT) from None
    return plain, int.from_bytes(counter, "little")


def encrypt_bthome(objects: bytes, *, mac: bytes, bindkey: bytes, counter: int,
                   info: int = 0x41) -> bytes:
    """The service data (after the UUID) that carries ``objects`` encrypted, as a
    BTHome v2 device sends it. The inverse of :func:`decode_bthome`."""
    counter_bytes = counter.to_bytes(COUNTER_LENGTH, "little")
    sealed = AESCCM(bindkey, tag_length=MIC_LENGTH).encrypt(
        _nonce(mac, info | ENCRYPTED, counter_bytes), objects, None)
    return bytes([info | ENCRYPTED]) + sealed[:-MIC_LENGTH] + counter_bytes + sealed[-MIC_LENGTH:]


def _objects(body: bytes) -> tuple[tuple[Measurement, ...], int | None, int | None]:
    out: list[Measurement] = []
    seen: dict[str, int] = {}
    sequence: int | None = None
    i = 0
    while i < len(body):
        object_id = body[i]
        spec = OBJECTS.get(object_id)
        if spec is None:
            return tuple(out), sequence, object_id
        i += 1
        length = spec.length
        if spec.kind in ("text", "raw"):
            if i >= len(body):
                raise TruncatedPayload(f"object 0x{object_id:02x} ({spec.name}) at offset "
                                       f"{i - 1} has no length byte", format=FORMAT)
            length = body[i]
            i += 1
        if i + length > len(body):
            raise TruncatedPayload(f"object 0x{object_id:02x} ({spec.name}) at offset {i - 1} "
                                   f"needs {length} bytes, {len(body) - i} left", format=FORMAT)
        chunk = body[i:i + length]
        i += length
        if spec.kind == "packet_id":
            sequence = chunk[0]
            continue
        seen[spec.name] = seen.get(spec.name, 0) + 1
        nth = seen[spec.name]
        name = spec.name if nth == 1 else f"{spec.name}_{nth}"
        out.extend(_measure(object_id, spec, name, chunk))
    return tuple(out), sequence, None


def _measure(object_id: int, spec: ObjectSpec, name: str, chunk: bytes) -> list[Measurement]:
    kind = spec.kind
    if kind == "number":
        raw = int.from_bytes(chunk, "little", signed=spec.signed)
        if spec.factor == 1.0:
            return [Measurement(name, raw, spec.unit)]
        return [Measurement(name, round(raw * spec.factor, spec.decimals), spec.unit)]
    if kind == "binary":
        if chunk[0] > 1:
            raise InvalidField(f"binary object 0x{object_id:02x} ({spec.name}) holds "
                               f"{chunk[0]}; expected 0 or 1", format=FORMAT)
        return [Measurement(name, chunk[0] == 1)]
    if kind == "button":
        return _event(object_id, name, BUTTON_EVENTS, chunk[0])
    if kind == "dimmer":
        found = _event(object_id, name, DIMMER_EVENTS, chunk[0])
        if found:
            found.append(Measurement(f"{name}_steps", chunk[1]))
        return found
    if kind == "text":
        try:
            return [Measurement(name, chunk.decode("utf-8"))]
        except UnicodeDecodeError:
            raise InvalidField(f"text object 0x{object_id:02x} is not UTF-8",
                               format=FORMAT) from None
    if kind == "raw":
        return [Measurement(name, bytes(chunk))]
    if kind == "timestamp":
        return [Measurement(name, int.from_bytes(chunk, "little"), spec.unit)]
    if kind == "device_type":
        return [Measurement(name, int.from_bytes(chunk, "little"))]
    # firmware4 / firmware3: little-endian version parts, most significant last
    return [Measurement(name, ".".join(str(b) for b in reversed(chunk)))]


def _event(object_id: int, name: str, events: dict[int, str | None],
           code: int) -> list[Measurement]:
    if code not in events:
        raise InvalidField(f"event object 0x{object_id:02x} has unknown event 0x{code:02x}",
                           format=FORMAT)
    event = events[code]
    return [] if event is None else [Measurement(name, event)]
