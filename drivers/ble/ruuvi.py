"""Ruuvi data format 5 (RAWv2): manufacturer data of company 0x0499, no I/O.

:func:`decode_ruuvi` takes the manufacturer data after the company id: 24
bytes, big-endian, starting with the format byte 5. A field holding its "not
available" value (0x8000 for signed fields, all ones for unsigned ones and the
MAC) is left out of the result. The measurement sequence number is returned as
``sequence`` for de-duplication.
"""

from __future__ import annotations

import struct

from .errors import AddressMismatch, InvalidField, TruncatedPayload, UnsupportedPayload
from .packet import Measurement, Packet, format_mac

FORMAT = "ruuvi"
COMPANY_ID = 0x0499
DATA_FORMAT = 5
LENGTH = 24
STANDARD_GRAVITY = 9.80665  # m/s2 per g
_LAYOUT = struct.Struct(">BhHHhhhHBH6s")
_NA_SIGNED = -0x8000
_NO_MAC = b"\xff" * 6


def decode_ruuvi(payload: bytes, *, mac: bytes | None = None) -> Packet:
    """Decode RAWv2 manufacturer data (the bytes after the company id).

    When ``mac`` is given, the MAC address inside the payload must match it.
    Raises TruncatedPayload, UnsupportedPayload, InvalidField or AddressMismatch.
    """
    data = bytes(payload)
    if not data:
        raise TruncatedPayload("empty payload; expected the data format byte", format=FORMAT)
    if data[0] != DATA_FORMAT:
        raise UnsupportedPayload(f"data format {data[0]}; only format 5 (RAWv2) is supported",
                                 format=FORMAT)
    if len(data) < LENGTH:
        raise TruncatedPayload(f"{len(data)} bytes; format 5 has {LENGTH}", format=FORMAT)
    if len(data) > LENGTH:
        raise InvalidField(f"{len(data)} bytes; format 5 has {LENGTH}", format=FORMAT)
    (_fmt, temp, humidity, pressure, ax, ay, az, power, movement, sequence,
     sender) = _LAYOUT.unpack(data)
    if mac is not None and sender != _NO_MAC and sender != mac:
        raise AddressMismatch(f"payload is from {format_mac(sender)}, sent by {format_mac(mac)}",
                              format=FORMAT)
    out: list[Measurement] = []
    if temp != _NA_SIGNED:
        out.append(Measurement("temperature", round(temp * 0.005, 3), "Cel"))
    if humidity != 0xFFFF:
        out.append(Measurement("humidity", round(humidity * 0.0025, 4), "%RH"))
    if pressure != 0xFFFF:
        out.append(Measurement("pressure", pressure + 50000, "Pa"))
    for axis, value in (("x", ax), ("y", ay), ("z", az)):
        if value != _NA_SIGNED:
            out.append(Measurement(f"acceleration_{axis}",
                                   round(value * STANDARD_GRAVITY / 1000, 8), "m/s2"))
    voltage = power >> 5
    if voltage != 0x7FF:
        out.append(Measurement("battery_voltage", round((voltage + 1600) / 1000, 3), "V"))
    tx_power = power & 0x1F
    if tx_power != 0x1F:
        out.append(Measurement("tx_power", tx_power * 2 - 40, "dBm"))
    if movement != 0xFF:
        out.append(Measurement("movement_counter", movement))
    return Packet(FORMAT, tuple(out), sequence=None if sequence == 0xFFFF else sequence)
