"""GATT devices through bleak's BlueZ backend against the mocked bluetoothd:
read, notify, write, link loss, power cycle, a device that never answers a
connect, and a clean disconnect on stop."""

from __future__ import annotations

import asyncio
import struct

import pytest

from gatewayd.errors import DriverError, WriteRefused
from tests.peers.bluez import BluezMock

from .support import eventually, make_driver, running, until

SERVICE = "ebe0ccb0-7a0a-4b0c-8a1a-6ff2997da3a6"
DATA = "ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6"  # LYWSD03MMC: int16 0.01 Cel, uint8 %RH, uint16 mV
INTERVAL = "ebe0ccd8-7a0a-4b0c-8a1a-6ff2997da3a6"
BATTERY = "00002a19-0000-1000-8000-00805f9b34fb"
ADDR = "A4:C1:38:11:22:33"


def table(**extra: object) -> dict[str, object]:
    return {
        "address": ADDR, "format": "gatt", "poll": "200ms", "connect_timeout": "2s",
        "reconnect_delay": "50ms", "reconnect_delay_max": "200ms",
        "characteristics": [
            {"uuid": DATA, "name": "temperature", "struct": "<h", "scale": 0.01, "unit": "Cel",
             "notify": True},
            {"uuid": DATA, "name": "humidity", "struct": "<2xB", "unit": "%RH", "notify": True},
            {"uuid": "2a19", "name": "battery", "struct": "<B", "unit": "%"},
            {"uuid": INTERVAL, "name": "interval", "struct": "<B", "unit": "s",
             "writable": {"min": 1, "max": 60}},
        ],
        **extra,
    }


def sensor(bluez: BluezMock, address: str = ADDR) -> tuple[str, str, str, str]:
    dev = bluez.add_device(address, "LYWSD03MMC")
    data = bluez.add_characteristic(dev, SERVICE, DATA, ["read", "notify"],
                                    struct.pack("<hBH", 2150, 45, 3000))
    battery = bluez.add_characteristic(dev, "0000180f-0000-1000-8000-00805f9b34fb", BATTERY,
                                       ["read"], bytes([87]))
    interval = bluez.add_characteristic(dev, SERVICE, INTERVAL, ["read", "write"], bytes([10]))
    bluez.mock.SetAdvertisingInterval(dev, 100)
    bluez.advertise(dev)  # remembered: it advertises whenever someone scans
    return dev, data, battery, interval


async def test_read_notify_write_and_clean_disconnect(bluez: BluezMock) -> None:
    dev, data, _battery, interval = sensor(bluez)
    driver = make_driver(table())
    async with running(driver) as sink:
        await until(driver, lambda d: d.state == "connected")
        await sink.wait_count(4)  # the first read of every characteristic
        assert sorted(r.point for r in sink.readings[:4]) == \
            ["battery", "humidity", "interval", "temperature"]
        assert sink.values("temperature") == [21.5]
        await eventually(lambda: bluez.characteristic_state(data)["Notifying"])
        assert bluez.notify(data, struct.pack("<hBH", -125, 51, 2990))
        await until(driver, lambda d: d.values.get("temperature", {}).get("value") == -1.25)
        assert sink.values("humidity")[-1] == 51
        await until(driver, lambda d: d.reads >= 6)  # polled: battery and interval
        assert bluez.characteristic_state(data)["Reads"] == 1  # notified ones are not polled
        await driver.write("interval", 30)
        assert bluez.characteristic_state(interval)["Writes"] == [bytes([30])]
        with pytest.raises(WriteRefused):
            await driver.write("interval", 61)
        with pytest.raises(WriteRefused):
            await driver.write("battery", 1)
        assert driver.writes_refused == 2
    state = bluez.device_state(dev)
    assert state["Connected"] is False and state["DisconnectCalls"] == 1
    assert driver.state == "stopped"


async def test_link_loss_and_power_cycle_reconnect_by_themselves(bluez: BluezMock) -> None:
    dev, data, _battery, _interval = sensor(bluez)
    driver = make_driver(table())
    async with running(driver) as sink:
        await until(driver, lambda d: d.connects == 1 and d.state == "connected")
        bluez.mock.DropConnection(dev)
        await until(driver, lambda d: d.connects == 2 and d.state == "connected")
        assert driver.disconnects == 1
        await eventually(lambda: bluez.characteristic_state(data)["Notifying"])
        bluez.mock.SetPowered("hci0", False)
        await until(driver, lambda d: d.state == "disconnected" and d.disconnects == 2)
        with pytest.raises(DriverError):
            await driver.write("interval", 5)  # not connected
        bluez.mock.SetPowered("hci0", True)
        await until(driver, lambda d: d.connects == 3 and d.state == "connected")
        await eventually(lambda: bluez.characteristic_state(data)["Notifying"])
        assert bluez.notify(data, struct.pack("<hBH", 1999, 40, 2990))
        await until(driver, lambda d: d.values.get("temperature", {}).get("value") == 19.99)
        assert sink.values("temperature")[:2] == [21.5, 21.5]  # read at each connect


async def test_a_device_that_never_answers_does_not_wedge_the_adapter(bluez: BluezMock) -> None:
    stuck, *_ = sensor(bluez, "A4:C1:38:00:00:0F")
    bluez.mock.SetConnectMode(stuck, "hang")
    sensor(bluez, ADDR)
    hanging = make_driver(table(address="A4:C1:38:00:00:0F", connect_timeout="1s"), name="stuck")
    healthy = make_driver(table(), name="ok")
    async with running(hanging, healthy):
        await until(hanging, lambda d: d.connect_failures >= 1)
        await until(healthy, lambda d: d.state == "connected")
        # the stuck device's attempts were cancelled, not left pending in bluetoothd
        await eventually(lambda: bluez.device_state(stuck)["DisconnectCalls"] >= 1)
        assert hanging.state in ("connecting", "disconnected")
        assert hanging.connects == 0


async def test_refused_connect_backs_off_and_recovers(bluez: BluezMock) -> None:
    dev, *_ = sensor(bluez)
    bluez.mock.SetConnectMode(dev, "refuse")
    driver = make_driver(table())
    async with running(driver):
        await until(driver, lambda d: d.connect_failures >= 2)
        assert "cannot connect" in (driver.last_error or "")
        bluez.mock.SetConnectMode(dev, "accept")
        await until(driver, lambda d: d.state == "connected")
        await asyncio.sleep(0)
