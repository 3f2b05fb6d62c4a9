"""atheris harness: the NMEA 0183 decoder, fed line by line as the serial driver feeds
it. Garbage is a ProtocolError; decoded positions stay on the globe."""

from __future__ import annotations

import math

import atheris
from harness import fuzz

with atheris.instrument_imports(include=["gatewayd.drivers.serial"]):
    from gatewayd.drivers.serial.nmea import NmeaDecoder

    from gatewayd.errors import ProtocolError


def one_input(data: bytes) -> None:
    decoder = NmeaDecoder()
    for line in data.split(b"\n")[:64]:
        try:
            points = decoder.decode(line)
        except ProtocolError:
            continue
        for name, value in points or ():
            if isinstance(value, float):
                assert math.isfinite(value), (name, value)
            if name == "latitude":
                assert -90 <= value <= 90  # type: ignore[operator]
            if name == "longitude":
                assert -180 <= value <= 180  # type: ignore[operator]


if __name__ == "__main__":
    fuzz(one_input)
