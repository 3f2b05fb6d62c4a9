"""``gatewayd run`` with ble devices against the mocked bluetoothd: readings flow,
status shows them, and the adapter's power cycle is survived."""

from __future__ import annotations

import struct
from typing import Any

from tests.peers.bluez import BluezMock
from tests.support.daemon import DaemonProcess

from .support import BTHOME_UUID

CONFIG = """
[gateway]
id = "gw-ble"

[buffer]
commit_interval = "50ms"

[devices.room]
driver = "ble"
address = "A4:C1:38:00:00:01"
format = "bthome"
rescan_delay = "100ms"
rescan_delay_max = "500ms"

[devices.fridge]
driver = "ble"
address = "A4:C1:38:11:22:33"
format = "gatt"
poll = "500ms"
reconnect_delay = "100ms"
reconnect_delay_max = "500ms"

[[devices.fridge.characteristics]]
uuid = "ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6"
name = "temperature"
struct = "<h"
scale = 0.01
unit = "Cel"
notify = true

[devices.nearby]
driver = "ble"
discovery = true
"""


def health(st: dict[str, Any], device: str) -> dict[str, Any]:
    h: dict[str, Any] = st["components"][f"device:{device}"]["health"]
    return h


def value(st: dict[str, Any], device: str, point: str) -> Any:
    return health(st, device).get("values", {}).get(point, {}).get("value")


def test_daemon_reads_ble_devices_through_bluez(daemon_factory: type[DaemonProcess],
                                                bluez: BluezMock) -> None:
    room = bluez.add_device("A4:C1:38:00:00:01")
    fridge = bluez.add_device("A4:C1:38:11:22:33", "fridge")
    data = bluez.add_characteristic(fridge, "ebe0ccb0-7a0a-4b0c-8a1a-6ff2997da3a6",
                                    "ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6", ["read", "notify"],
                                    struct.pack("<h", 412))
    bluez.mock.SetAdvertisingInterval(fridge, 100)
    bluez.advertise(fridge)
    other = bluez.add_device("A4:C1:38:0B:5E:ED", "ATC_0B5EED")

    d = daemon_factory(CONFIG, extra_env=bluez.env)
    d.start()
    d.wait_ready()
    d.wait_status(lambda st: health(st, "room")["state"] == "scanning"
                  and health(st, "nearby")["state"] == "scanning")
    assert bluez.advertise(room, service_data={BTHOME_UUID: bytes.fromhex("40000102CA09")})
    assert bluez.advertise(other, service_data={
        "0000181a-0000-1000-8000-00805f9b34fb": bytes.fromhex("ED5E0B38C1A4C8086C1AC60B641B09")})
    st = d.wait_status(lambda st: value(st, "room", "temperature") == 25.06
                       and value(st, "fridge", "temperature") == 4.12
                       and health(st, "nearby")["discovered_count"] == 1)
    assert health(st, "nearby")["discovered"][0]["address"] == "A4:C1:38:0B:5E:ED"
    assert health(st, "room")["adapter"]["scan"] == "passive"
    assert health(st, "room")["readings"] == 1
    assert health(st, "nearby")["readings"] == 0

    bluez.mock.SetPowered("hci0", False)
    d.wait_status(lambda st: health(st, "fridge")["state"] == "disconnected"
                  and health(st, "room")["state"] == "waiting")
    bluez.mock.SetPowered("hci0", True)
    d.wait_status(lambda st: health(st, "fridge")["state"] == "connected"
                  and health(st, "fridge")["connects"] == 2
                  and health(st, "room")["state"] == "scanning")
    # subscribed again after the reconnect: the next notification lands
    d.wait_status(lambda st: bluez.characteristic_state(data)["Notifying"])
    assert bluez.notify(data, struct.pack("<h", -150))
    d.wait_status(lambda st: value(st, "fridge", "temperature") == -1.5)
    assert bluez.advertise(room, service_data={BTHOME_UUID: bytes.fromhex("40000202CB09")})
    st = d.wait_status(lambda st: value(st, "room", "temperature") == 25.07)
    assert st["components"]["device:room"]["errors"] == 0

    out = d.ctl("status")
    assert out.returncode == 0 and "room" in out.stdout
    d.stop()
    assert d.proc is not None and d.proc.returncode == 0
    assert bluez.device_state(fridge)["Connected"] is False
