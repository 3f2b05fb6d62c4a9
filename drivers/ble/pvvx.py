"""The custom advertisement of Xiaomi LYWSD03MMC thermometers with pvvx or
atc1441 firmware: service data of UUID 0x181A, no I/O.

:func:`decode_pvvx` takes the service data after the UUID and tells the two
layouts apart by length, as their firmware documents them:

- pvvx "custom" (15 bytes, little-endian): MAC (6, least significant byte
  first), temperature (int16, 0.01 Cel), humidity (uint16, 0.01 %RH), battery
  (uint16, mV), battery (uint8, %), measurement counter (uint8), flags (uint8:
  bit 0 reed switch, bit 1 GPIO trigger output, bit 2 output controlled by the
  trigger, bit 3 temperature trigger event, bit 4 humidity trigger event);
- atc1441 (13 bytes, big-endian): MAC (6, most significant byte first),
  temperature (int16, 0.1 Cel), humidity (uint8, %RH), battery (uint8, %),
  battery (uint16, mV), frame counter (uint8).

The counter is returned as ``sequence`` for de-duplication.
"""

from __future__ import annotations

import struct

from .errors import AddressMismatch, InvalidField, TruncatedPayload
from .packet import Measurement, Packet, format_mac

FORMAT = "pvvx"
SERVICE_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
UUID_BYTES = b"\x1a\x18"
PVVX_LENGTH = 15
ATC_LENGTH = 13
_PVVX = struct.Struct("<6shHHBBB")
_ATC = struct.Struct(">6shBBHB")
FLAG_NAMES = ("reed_switch", "trigger_output", "trigger_controls_output",
              "temperature_trigger", "humidity_trigger")


def decode_pvvx(payload: bytes, *, mac: bytes | None = None) -> Packet:
    """Decode pvvx custom or atc1441 service data (the bytes after the UUID).

    When ``mac`` is given, the MAC address inside the payload must match it.
    Raises TruncatedPayload, InvalidField or AddressMismatch.
    """
    data = bytes(payload)
    if len(data) == PVVX_LENGTH:
        return _pvvx(data, mac)
    if len(data) == ATC_LENGTH:
        return _atc(data, mac)
    if len(data) < ATC_LENGTH:
        raise TruncatedPayload(f"{len(data)} bytes; expected {PVVX_LENGTH} (pvvx custom) or "
                               f"{ATC_LENGTH} (atc1441)", format=FORMAT)
    raise InvalidField(f"{len(data)} bytes; expected {PVVX_LENGTH} (pvvx custom) or "
                       f"{ATC_LENGTH} (atc1441)", format=FORMAT)


def _check_mac(sender: bytes, mac: bytes | None) -> None:
    if mac is not None and sender != mac:
        raise AddressMismatch(f"payload is from {format_mac(sender)}, sent by {format_mac(mac)}",
                              format=FORMAT)


def _pvvx(data: bytes, mac: bytes | None) -> Packet:
    reversed_mac, temp, humidity, battery_mv, battery, counter, flags = _PVVX.unpack(data)
    _check_mac(reversed_mac[::-1], mac)
    if battery > 100:
        raise InvalidField(f"battery level {battery} %; expected 0 to 100", format=FORMAT)
    out = [
        Measurement("temperature", round(temp * 0.01, 2), "Cel"),
        Measurement("humidity", round(humidity * 0.01, 2), "%RH"),
        Measurement("battery_voltage", round(battery_mv / 1000, 3), "V"),
        Measurement("battery", battery, "%"),
    ]
    out.extend(Measurement(name, bool(flags >> bit & 1)) for bit, name in enumerate(FLAG_NAMES))
    return Packet(FORMAT, tuple(out), sequence=counter)


def _atc(data: bytes, mac: bytes | None) -> Packet:
    sender, temp, humidity, battery, battery_mv, counter = _ATC.unpack(data)
    _check_mac(sender, mac)
    if battery > 100:
        raise InvalidField(f"battery level {battery} %; expected 0 to 100", format=FORMAT)
    out = (
        Measurement("temperature", round(temp * 0.1, 1), "Cel"),
        Measurement("humidity", humidity, "%RH"),
        Measurement("battery_voltage", round(battery_mv / 1000, 3), "V"),
        Measurement("battery", battery, "%"),
    )
    return Packet(FORMAT, out, sequence=counter)
