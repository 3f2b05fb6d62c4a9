"""atheris harness: the SenML decoder (JSON and CBOR). Garbage is a ProtocolError."""

from __future__ import annotations

import atheris
from harness import fuzz

with atheris.instrument_imports(include=["gatewayd.senml"]):
    from gatewayd import senml
    from gatewayd.errors import ProtocolError
    from gatewayd.reading import Reading


def one_input(data: bytes) -> None:
    fmt = "cbor" if data[:1] == b"\x01" else "json"
    try:
        readings = senml.decode(data[1:], fmt=fmt, now_ns=1_700_000_000_000_000_000)
    except ProtocolError:
        return
    for r in readings:
        assert isinstance(r, Reading) and r.device and r.point


if __name__ == "__main__":
    fuzz(one_input)
