"""atheris harness: Modbus register decoding. The input picks a type, a word order and
the registers; decoding gives a value of the type or a ProtocolError, and every
integer value encodes back to the same registers."""

from __future__ import annotations

import atheris
from harness import fuzz

with atheris.instrument_imports(include=["gatewayd.drivers.modbus.codec"]):
    from gatewayd.drivers.modbus import codec

    from gatewayd.errors import ProtocolError

TYPES = [*codec.NUMERIC_TYPES, "bool", "string(1)", "string(9)", "string(250)"]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    vtype = codec.parse_type(TYPES[fdp.ConsumeIntInRange(0, len(TYPES) - 1)])
    order = codec.ORDERS[fdp.ConsumeIntInRange(0, 3)]
    count = fdp.ConsumeIntInRange(0, 130)
    words = [fdp.ConsumeIntInRange(-1, 0x10000) for _ in range(count)]
    try:
        value = codec.decode(words, vtype, order)
    except ProtocolError:
        return
    if vtype.is_integer:
        assert codec.encode(value, vtype, order) == words
    if vtype.name == "bool":
        assert isinstance(value, bool)


if __name__ == "__main__":
    fuzz(one_input)
