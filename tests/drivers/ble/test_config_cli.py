"""The ble driver's config problems and ``gatewayctl ble decode``."""

from __future__ import annotations

import json

from tests.support.daemon import gatewayctl

from .support import parse_table

P = "gatewayd.toml: devices.s."


def test_defaults_and_named_problems() -> None:
    opts, problems = parse_table({"address": "a4:c1:38:00:00:01", "format": "pvvx"})
    assert problems == []
    assert (opts.address, opts.adapter, opts.scan_mode, opts.duplicate_window) == \
        ("A4:C1:38:00:00:01", "hci0", "auto", 60.0)
    _, problems = parse_table({"address": "nope", "format": "bthom", "adapter": "usb0",
                               "bindkey_file": "/k", "poll": "1s"})
    assert problems == [
        P + "address: invalid MAC address 'nope'; expected six hex bytes like 'A4:C1:38:0B:5E:ED'",
        P + "format: unknown value 'bthom' (did you mean 'bthome'?); expected one of bthome, "
            "ruuvi, pvvx, gatt",
        P + "adapter: invalid adapter 'usb0'; expected a BlueZ adapter name such as 'hci0'",
        P + "bindkey_file: applies to format = \"bthome\" only",
        P + "poll: applies to format = \"gatt\" only",
    ]


def test_gatt_characteristic_problems() -> None:
    _, problems = parse_table({"address": "A4:C1:38:00:00:01", "format": "gatt",
                               "characteristics": [
                                   {"uuid": "xyz", "name": "a"},
                                   {"uuid": "2a19", "name": "b", "struct": "<hh"},
                                   {"uuid": "2a19", "name": "c", "struct": "<2xB",
                                    "writable": {"min": 0, "max": 9}},
                                   {"uuid": "2a19", "name": "d", "writable": True},
                               ]})
    assert problems == [
        P + "characteristics[0].uuid: invalid UUID 'xyz'; expected a 16-bit UUID such as "
            "'2a6e' or a full UUID such as 'ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6'",
        P + "characteristics[1].struct: struct layout '<hh' holds 2 values; expected exactly "
            "one number or bool (skip bytes with 'x': '<2xB')",
        P + "characteristics[2].writable: layout '<2xB' skips bytes: a write would overwrite "
            "them; declare the whole value",
        P + "characteristics[3].writable: expected a table { min = ..., max = ... } for a "
            "numeric point",
    ]


def test_decode_cli() -> None:
    out = gatewayctl("ble", "decode", "bthome", "41e445f3c9962b332211006c7c4519",
                     "--bindkey", "231d39c1d7cc1ab1aee224cd096db932", "--mac",
                     "54:48:E6:8F:80:A5", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["readings"] == [{"name": "temperature", "value": 25.06, "unit": "Cel"},
                                {"name": "humidity", "value": 50.55, "unit": "%RH"}]
    assert data["counter"] == 1122867
    out = gatewayctl("ble", "decode", "pvvx", "ED5E0B38C1A4C8086C1AC60B641B09")
    assert out.returncode == 0 and "temperature              22.48 Cel" in out.stdout
    out = gatewayctl("ble", "decode", "bthome", "41e445f3c9962b332211006c7c4519")
    assert out.returncode == 1 and "MissingBindkey" in out.stderr
    out = gatewayctl("ble", "decode", "ruuvi", "zz")
    assert out.returncode == 2
