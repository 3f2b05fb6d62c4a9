"""``gatewayctl ble decode``: decode one advertisement payload while commissioning a sensor.

No daemon and no radio are involved: the payload (hex) goes through the same
decoders the driver uses, and the readings (or the named decoding error) are
printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .adverts import decode
from .errors import AdvertisementError
from .packet import parse_mac

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ble decode`` to gatewayctl's sub-command parser (``common`` brings --json)."""
    ble = sub.add_parser("ble", help="Bluetooth LE sensors")
    bsub = ble.add_subparsers(dest="ble_command", required=True, metavar="COMMAND")
    p = bsub.add_parser("decode", parents=[common], help="decode an advertisement payload (hex)",
                        description="HEX is the service data after the UUID (bthome, pvvx) or "
                        "the manufacturer data after the company id (ruuvi).")
    p.add_argument("format", choices=("bthome", "ruuvi", "pvvx"))
    p.add_argument("hex", metavar="HEX")
    p.add_argument("--bindkey", metavar="HEX", help="BTHome bind key (32 hex digits)")
    p.add_argument("--mac", help="the sender's address (needed to decrypt; checked against "
                   "the payload's own)")
    p.set_defaults(func=cmd_decode)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", "").replace(" ", "").removeprefix("0x"))


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        payload = _hex(args.hex)
        bindkey = _hex(args.bindkey) if args.bindkey else None
        mac = parse_mac(args.mac) if args.mac else None
        if bindkey is not None and len(bindkey) != 16:
            raise ValueError("a bind key is 32 hex digits")
    except ValueError as err:
        print(f"gatewayctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        packet = decode(args.format, payload, mac=mac, bindkey=bindkey)
    except AdvertisementError as err:
        if args.json:
            json.dump({"ok": False, "error": type(err).__name__, "reason": err.reason,
                       "message": str(err)}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(f"gatewayctl: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    readings = [{"name": m.name, "value": m.value.hex() if isinstance(m.value, bytes) else m.value,
                 "unit": m.unit} for m in packet.measurements]
    if args.json:
        json.dump({"ok": True, "format": packet.format, "readings": readings,
                   "sequence": packet.sequence, "counter": packet.counter,
                   "encrypted": packet.encrypted, "stopped_at": packet.stopped_at},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    for r in readings:
        unit = f" {r['unit']}" if r["unit"] else ""
        print(f"{r['name']:<24} {r['value']}{unit}")
    extras = []
    if packet.sequence is not None:
        extras.append(f"sequence {packet.sequence}")
    if packet.encrypted:
        extras.append(f"encrypted, counter {packet.counter}")
    if packet.stopped_at is not None:
        extras.append(f"stopped at unknown object id 0x{packet.stopped_at:02x}")
    if extras:
        print(f"({', '.join(extras)})")
    return EXIT_OK
