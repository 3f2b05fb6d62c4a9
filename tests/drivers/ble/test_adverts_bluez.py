"""Advertising sensors through bleak's BlueZ backend against the mocked bluetoothd:
passive and active scanning, repeats, encryption, power cycles, a bluetoothd
restart, and the discovery listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gatewayd.drivers.ble import bthome
from gatewayd.drivers.ble.packet import parse_mac

from gatewayd.errors import DriverError
from tests.peers.bluez import BluezMock

from .support import BTHOME_UUID, PVVX_UUID, ListSink, eventually, make_driver, running, until

ADDR = "A4:C1:38:00:00:01"
RUUVI_ADDR = "CB:B8:33:4C:88:4F"
RUUVI_VALID = bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")
KEY = "231d39c1d7cc1ab1aee224cd096db932"


def bthome_adv(packet_id: int, temp_centi: int) -> dict[str, bytes]:
    return {BTHOME_UUID: bytes([0x40, 0x00, packet_id, 0x02])
            + temp_centi.to_bytes(2, "little", signed=True)}


async def test_bthome_passive_scan_decodes_and_drops_repeats(bluez: BluezMock) -> None:
    dev = bluez.add_device(ADDR, "sensor")
    driver = make_driver({"address": ADDR, "format": "bthome"})
    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "scanning")
        assert driver.health()["adapter"]["scan"] == "passive"
        assert bluez.adapter_state()["Monitors"] == 1
        assert bluez.adapter_state()["Sessions"] == 0
        assert bluez.advertise(dev, service_data=bthome_adv(1, 2150))
        await sink.wait_count(1)
        assert bluez.advertise(dev, service_data=bthome_adv(1, 2150), rssi=-70)  # repeat
        await until(driver, lambda d: d.duplicates == 1)
        assert bluez.advertise(dev, service_data=bthome_adv(2, 2161))
        await sink.wait_count(2)
        assert sink.values("temperature") == [21.5, 21.61]
        assert sink.readings[0].unit == "Cel" and sink.readings[0].device == "s"
        h = driver.health()
        assert (h["adverts"], h["packets"], h["duplicates"]) == (3, 2, 1)
        assert h["values"]["temperature"]["value"] == 21.61
        assert h["rssi"] == -60
    await eventually(lambda: bluez.adapter_state()["Monitors"] == 0)


async def test_active_scanning_when_bluetoothd_has_no_monitor_api(
        bluez_without_monitors: BluezMock) -> None:
    bluez = bluez_without_monitors
    dev = bluez.add_device(RUUVI_ADDR)
    driver = make_driver({"address": RUUVI_ADDR, "format": "ruuvi"})
    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "scanning")
        assert driver.health()["adapter"]["scan"] == "active"
        assert bluez.adapter_state()["Sessions"] == 1
        assert bluez.advertise(dev, manufacturer_data={0x0499: RUUVI_VALID})
        await sink.wait_count(9)
        assert sink.values("temperature") == [24.3]
        assert sink.values("pressure") == [100044]
    await eventually(lambda: bluez.adapter_state()["Sessions"] == 0)


async def test_passive_only_refused_without_monitor_api(bluez_without_monitors: BluezMock) -> None:
    driver = make_driver({"address": RUUVI_ADDR, "format": "ruuvi", "scan_mode": "passive",
                          "rescan_delay": "50ms", "rescan_delay_max": "100ms"})
    async with running(driver):
        await until(driver, lambda d: d.state == "waiting" and d.last_error is not None
                    and "advertisement monitor" in d.last_error)


async def test_adapter_power_cycle_rescans_by_itself(bluez: BluezMock) -> None:
    dev = bluez.add_device(ADDR)
    driver = make_driver({"address": ADDR, "format": "bthome", "scan_mode": "active",
                          "rescan_delay": "50ms", "rescan_delay_max": "200ms"})
    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "scanning")
        assert bluez.advertise(dev, service_data=bthome_adv(1, 2000))
        await sink.wait_count(1)
        bluez.mock.SetPowered("hci0", False)
        await until(driver, lambda d: d.state == "waiting")
        assert not bluez.advertise(dev, service_data=bthome_adv(2, 2100))  # nobody scans
        assert driver.health()["adapter"]["powered"] is False
        bluez.mock.SetPowered("hci0", True)
        await until(driver, lambda d: d.state == "scanning"
                    and d.health()["adapter"]["scans_started"] == 2)
        assert bluez.adapter_state()["Sessions"] == 1
        # The sensor kept advertising packet 2 while the adapter was off: it is heard
        # as soon as the new scan runs.
        await sink.wait_count(2)
        assert bluez.advertise(dev, service_data=bthome_adv(3, 2200))
        await sink.wait_count(3)
        assert sink.values("temperature") == [20.0, 21.0, 22.0]


async def test_bluetoothd_restart_is_survived(bluez: BluezMock) -> None:
    dev = bluez.add_device(ADDR)
    driver = make_driver({"address": ADDR, "format": "bthome",
                          "rescan_delay": "50ms", "rescan_delay_max": "200ms"})
    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "scanning")
        assert bluez.advertise(dev, service_data=bthome_adv(1, 2000))
        await sink.wait_count(1)
        bluez.kill()
        await until(driver, lambda d: d.state == "waiting")
        bluez.start()  # a new bluetoothd: no adapter yet, then hci0 comes back
        bluez.add_adapter("hci0")
        dev = bluez.add_device(ADDR)
        await until(driver, lambda d: d.state == "scanning"
                    and d.health()["adapter"]["scans_started"] == 2)
        await eventually(lambda: bluez.adapter_state()["Monitors"] == 1)
        assert bluez.advertise(dev, service_data=bthome_adv(2, 2300))
        await sink.wait_count(2)
        assert sink.values("temperature") == [20.0, 23.0]
        assert driver.health()["adapter"]["bluetoothd_restarts"] == 1


async def test_encrypted_bthome_with_replay_check(bluez: BluezMock, tmp_path: Path) -> None:
    mac = parse_mac("54:48:E6:8F:80:A5")
    key_file = tmp_path / "bindkey"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    dev = bluez.add_device("54:48:E6:8F:80:A5")
    driver = make_driver({"address": "54:48:E6:8F:80:A5", "format": "bthome",
                          "bindkey_file": str(key_file)})

    def sealed(counter: int, temp: int) -> dict[str, bytes]:
        objects = b"\x02" + temp.to_bytes(2, "little", signed=True)
        return {BTHOME_UUID: bthome.encrypt_bthome(objects, mac=mac, bindkey=bytes.fromhex(KEY),
                                                   counter=counter)}

    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "scanning")
        first = sealed(100, 2506)
        assert bluez.advertise(dev, service_data=first)
        await sink.wait_count(1)
        assert bluez.advertise(dev, service_data=sealed(101, 2507))
        await sink.wait_count(2)
        assert bluez.advertise(dev, service_data=first)  # recorded and replayed
        await until(driver, lambda d: d.errors.get("replayed") == 1)
        assert bluez.advertise(dev, service_data={BTHOME_UUID: bytes.fromhex("4002CA09")})
        await until(driver, lambda d: d.errors.get("not_encrypted") == 1)
        assert sink.values("temperature") == [25.06, 25.07]
        assert driver.health()["encryption_counter"] == 101
        assert KEY not in str(driver.health())


async def test_world_readable_bindkey_is_refused(bluez: BluezMock, tmp_path: Path) -> None:
    key_file = tmp_path / "bindkey"
    key_file.write_text(KEY)
    os.chmod(key_file, 0o644)
    driver = make_driver({"address": ADDR, "format": "bthome", "bindkey_file": str(key_file)})
    with pytest.raises(DriverError, match="readable by every user") as err:
        await driver.run(ListSink())  # fails at start; the supervisor retries with backoff
    assert KEY not in str(err.value)


async def test_discovery_lists_unknown_devices_without_forwarding(bluez: BluezMock) -> None:
    known = bluez.add_device(ADDR)
    unknown = bluez.add_device("A4:C1:38:0B:5E:ED", "ATC_0B5EED")
    pvvx_payload = bytes.fromhex("ED5E0B38C1A4C8086C1AC60B641B09")
    listing = make_driver({"discovery": True, "scan_mode": "active"}, name="scan")
    sensor = make_driver({"address": ADDR, "format": "bthome"})
    async with running(listing, sensor) as sink:
        await until(listing, lambda d: d.state == "scanning")
        await until(sensor, lambda d: d.state == "scanning")
        assert bluez.advertise(unknown, service_data={PVVX_UUID: pvvx_payload}, rssi=-71)
        assert bluez.advertise(known, service_data=bthome_adv(1, 2000))
        await until(listing, lambda d: "A4:C1:38:0B:5E:ED" in d.discovered)
        await sink.wait_count(1)
        h = listing.health()
        assert h["discovered_count"] == 1
        entry = h["discovered"][0]
        assert (entry["address"], entry["name"], entry["format"], entry["rssi"]) == \
            ("A4:C1:38:0B:5E:ED", "ATC_0B5EED", "pvvx", -71)
        assert entry["decoded"]["temperature"] == 22.48
        assert {r.device for r in sink.readings} == {"s"}  # nothing from the listing
