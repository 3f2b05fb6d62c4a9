"""What a decoder returns: the measurements of one advertisement, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.reading import Value


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded value: its point name, the value and its unit (a SenML unit name
    where one exists, see docs/drivers/ble.md)."""

    name: str
    value: Value
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded advertisement.

    ``sequence`` is what the sender increments for new data (BTHome packet id,
    Ruuvi measurement sequence, pvvx counter), used to drop repeats; ``counter``
    is the encryption counter of an encrypted BTHome packet, checked against
    replay; ``stopped_at`` names the first BTHome object id this decoder does
    not know (the specification says to stop there and keep what came before).
    """

    format: str
    measurements: tuple[Measurement, ...]
    sequence: int | None = None
    counter: int | None = None
    encrypted: bool = False
    stopped_at: int | None = None


def parse_mac(text: str) -> bytes:
    """``"A4:C1:38:0B:5E:ED"`` (or without separators) as 6 bytes. Raises ValueError."""
    cleaned = text.replace(":", "").replace("-", "")
    if len(cleaned) != 12:
        raise ValueError(f"invalid MAC address {text!r}; expected six hex bytes like "
                         "'A4:C1:38:0B:5E:ED'")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"invalid MAC address {text!r}; expected six hex bytes like "
                         "'A4:C1:38:0B:5E:ED'") from None


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02X}" for b in mac)
