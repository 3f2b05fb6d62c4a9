"""atheris harness: the BTHome v2 decoder, plain and encrypted (with a bind key).
Garbage is an AdvertisementError; nothing else escapes."""

from __future__ import annotations

import atheris
from harness import fuzz

with atheris.instrument_imports(include=["gatewayd.drivers.ble"]):
    from gatewayd.drivers.ble import bthome
    from gatewayd.drivers.ble.errors import AdvertisementError
    from gatewayd.drivers.ble.packet import Packet

MAC = bytes.fromhex("5448E68F80A5")
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


def one_input(data: bytes) -> None:
    encrypted = data[:1] == b"\x01"
    try:
        packet = bthome.decode_bthome(data[1:], mac=MAC, bindkey=KEY if encrypted else None)
    except AdvertisementError:
        return
    assert isinstance(packet, Packet)


if __name__ == "__main__":
    fuzz(one_input)
