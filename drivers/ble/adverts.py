"""From one advertisement to new readings, without I/O.

:func:`payload_of` picks a format's payload out of an advertisement's service
and manufacturer data; :func:`decode` runs the format's decoder;
:class:`AdvertFilter` keeps what a device's stream needs between packets: the
encryption counter (a lower one is a replay, the same one a repeat) and the
last sequence (a repeated packet id, measurement sequence or counter is the
same measurement sent again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import bthome, pvvx, ruuvi
from .errors import ReplayedCounter
from .packet import Packet

FORMATS = ("bthome", "ruuvi", "pvvx")


def payload_of(fmt: str, service_data: Mapping[str, bytes],
               manufacturer_data: Mapping[int, bytes]) -> bytes | None:
    """The bytes ``fmt`` decodes (after the UUID or company id), or None when the
    advertisement carries none."""
    if fmt == "bthome":
        return service_data.get(bthome.SERVICE_UUID)
    if fmt == "pvvx":
        return service_data.get(pvvx.SERVICE_UUID)
    if fmt == "ruuvi":
        return manufacturer_data.get(ruuvi.COMPANY_ID)
    raise ValueError(f"unknown advertisement format {fmt!r}")


def detect(service_data: Mapping[str, bytes],
           manufacturer_data: Mapping[int, bytes]) -> str | None:
    """The first format whose payload the advertisement carries, or None."""
    for fmt in FORMATS:
        if payload_of(fmt, service_data, manufacturer_data) is not None:
            return fmt
    return None


def decode(fmt: str, payload: bytes, *, mac: bytes | None = None,
           bindkey: bytes | None = None) -> Packet:
    """Decode ``payload`` as ``fmt``. Raises AdvertisementError (and ValueError for an
    unknown format or a bind key that is not 16 bytes)."""
    if fmt == "bthome":
        return bthome.decode_bthome(payload, mac=mac, bindkey=bindkey)
    if fmt == "ruuvi":
        return ruuvi.decode_ruuvi(payload, mac=mac)
    if fmt == "pvvx":
        return pvvx.decode_pvvx(payload, mac=mac)
    raise ValueError(f"unknown advertisement format {fmt!r}")


@dataclass
class AdvertFilter:
    """Decides whether a decoded packet is new data, per device.

    - an encrypted packet whose counter is lower than the last accepted one raises
      ReplayedCounter; the same counter is the same packet heard again;
    - a packet with a sequence is new when its sequence differs from the last one
      (the specifications' rule: BTHome packet id, Ruuvi measurement sequence,
      pvvx counter);
    - a packet without one is new when its measurements differ from the last
      accepted ones, or ``window`` seconds have passed since.
    """

    window: float
    last_counter: int | None = None
    last_key: object = None
    last_at: float = float("-inf")

    def accept(self, packet: Packet, now: float) -> bool:
        """True for new data. Raises ReplayedCounter."""
        if packet.counter is not None:
            if self.last_counter is not None:
                if packet.counter < self.last_counter:
                    raise ReplayedCounter(
                        f"encryption counter {packet.counter} is below the last accepted "
                        f"{self.last_counter}", format=packet.format, counter=packet.counter,
                        last=self.last_counter)
                if packet.counter == self.last_counter:
                    return False
            self.last_counter = packet.counter
        if packet.sequence is not None:
            key: object = ("sequence", packet.sequence)
            if key == self.last_key:
                return False
        else:
            key = ("values", packet.measurements)
            if key == self.last_key and now - self.last_at < self.window:
                return False
        self.last_key = key
        self.last_at = now
        return True
