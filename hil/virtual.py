"""The virtual bench: everything the checks need, on loopback, from the test peers.

- Modbus TCP: a pymodbus slave (unit 1) with known registers and a writable setpoint;
- Modbus RTU: a pymodbus slave with units 1 and 2 behind a socat pty pair, one bus;
- serial NMEA: a GNSS receiver emulator sending GGA and RMC 5 times a second over a
  socat pty pair (the one that is unplugged and plugged back in);
- serial ASCII: a polled weighing scale answering ``S`` over another pty pair;
- BLE: bluetoothd's D-Bus API mocked on a private bus (python-dbusmock), with an
  encrypted BTHome sensor and a Ruuvi tag advertising 4 times a second; the adapter
  is power-cycled;
- upstream: Debian's Mosquitto with TLS (a test CA);
- a bastion: Debian's sshd that lets the gateway key forward one port.

It needs what the test suite needs (socat, mosquitto, openssh-server, dbus-daemon and
the test extra of pyproject.toml) and imports the peers from ``tests/peers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

from gatewayd.drivers.ble import bthome
from gatewayd.drivers.modbus import codec as modbus_codec

from hil.bench import (
    Bench,
    BenchDevice,
    Broker,
    Expectation,
    Replug,
    TunnelBench,
    WriteCheck,
)
from tests.peers.bluez import BluezMock
from tests.peers.modbus_pty import pty_pair
from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap
from tests.peers.mosquitto import Mosquitto, free_port
from tests.peers.pki import make_pki
from tests.peers.serial_device import EmulatedPort, Instrument
from tests.peers.serial_pty import SocatPair
from tests.peers.sshd import Sshd, make_key

GATEWAY = "gw-hil"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
RUUVI_COMPANY = 0x0499
ROOM_MAC = "54:48:E6:8F:80:A5"
TAG_MAC = "CB:B8:33:4C:88:4F"
BINDKEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
SETPOINT = 30  # plc hr:200 before the write


def nmea(body: str) -> bytes:
    checksum = 0
    for ch in body.encode():
        checksum ^= ch
    return f"${body}*{checksum:02X}\r\n".encode()


class GnssReceiver:
    """Sends a fix (GGA, RMC) 5 times a second on the device end of a pty pair; while
    the pair is unplugged it waits, and it reopens the port when it is back."""

    LAT, LON = "4717.11437", "00833.91522"  # 47.2852395 N, 8.5652537 E

    def __init__(self, cable: SocatPair) -> None:
        self.cable = cable
        self.plugged = asyncio.Event()
        self.plugged.set()
        self.sent = 0

    async def run(self) -> None:
        while True:
            await self.plugged.wait()
            try:
                with EmulatedPort(self.cable.emu) as port:
                    while self.plugged.is_set():
                        now = datetime.datetime.now(datetime.UTC)
                        hms = now.strftime("%H%M%S.") + f"{now.microsecond // 10000:02d}"
                        await port.write(
                            nmea(f"GNGGA,{hms},{self.LAT},N,{self.LON},E,1,12,0.78,499.6,M,"
                                 "47.3,M,,")
                            + nmea(f"GNRMC,{hms},A,{self.LAT},N,{self.LON},E,0.000,,"
                                   f"{now.strftime('%d%m%y')},,,A"))
                        self.sent += 1
                        await asyncio.sleep(0.2)  # the receiver's own pace
            except (OSError, EOFError):
                # unplugged while writing: wait for the plug; if it was not an unplug,
                # try again after the receiver's pace
                if self.plugged.is_set():
                    await asyncio.sleep(0.2)


class Advertiser:
    """Makes the mocked BLE sensors advertise new measurements 4 times a second."""

    def __init__(self, bluez: BluezMock, room: str, tag: str) -> None:
        self.bluez, self.room, self.tag = bluez, room, tag
        self.count = 0

    def _once(self) -> None:
        n = self.count = self.count + 1
        objects = (bytes([0x00, n % 256, 0x01, 87, 0x02])
                   + struct.pack("<h", 2150 + n % 50) + b"\x03" + struct.pack("<H", 5000 + n % 100))
        room = bthome.encrypt_bthome(objects, mac=bytes.fromhex(ROOM_MAC.replace(":", "")),
                                     bindkey=BINDKEY, counter=n)
        self.bluez.advertise(self.room, service_data={BTHOME_UUID: room})
        tag = struct.pack(">BhHHhhhHBH6s", 5, 4400 + n % 40, 20000 + n % 100, 51325,
                          0, 0, 1000, (1400 << 5) | 20, n % 200, n % 65535,
                          bytes.fromhex(TAG_MAC.replace(":", "")))
        self.bluez.advertise(self.tag, manufacturer_data={RUUVI_COMPANY: tag})

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self._once)
            await asyncio.sleep(0.25)  # the sensors' advertising interval


def _scale_reply(n: int) -> bytes:
    return f"ST,GS,+{12.5 + (n % 10) * 0.01:07.2f}kg\r\n".encode()


@contextlib.asynccontextmanager
async def virtual_bench(work: Path, *, quick: bool = False) -> AsyncIterator[Bench]:
    """Bring the peers up under ``work`` (an existing folder) and describe them as a
    Bench; they go down at exit."""
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tasks:
        pki = make_pki(work / "pki", gateway_id=GATEWAY)
        broker = Mosquitto(work / "broker", pki=pki)
        await broker.astart()
        stack.push_async_callback(broker.astop)

        power = modbus_codec.encode(3.25, modbus_codec.ValueType("float32"), "CDAB")
        plc = PymodbusSlave({1: UnitMap(hr={0: 4711, 100: power[0], 101: power[1],
                                            200: SETPOINT}, ir={10: 215})})
        await stack.enter_async_context(plc)
        plc_port = await plc.start_tcp()

        rtu_master, rtu_slave = await stack.enter_async_context(pty_pair(work, "rtu"))
        meters = PymodbusSlave({
            1: UnitMap(ir={0: 123456 >> 16, 1: 123456 & 0xFFFF, 2: 2300}),
            2: UnitMap(ir={0: 654321 >> 16, 1: 654321 & 0xFFFF, 2: 2315})})
        await stack.enter_async_context(meters)
        await meters.start_serial(rtu_slave, baudrate=115200, parity="N")

        gps_cable = SocatPair(work / "gps")
        await gps_cable.start()
        stack.push_async_callback(gps_cable.stop)
        gnss = GnssReceiver(gps_cable)

        scale_cable = SocatPair(work / "scale")
        await scale_cable.start()
        stack.push_async_callback(scale_cable.stop)
        scale_port = stack.enter_context(EmulatedPort(scale_cable.emu))
        scale = Instrument(scale_port, query=b"S\r\n", reply=_scale_reply)

        bluez = await asyncio.to_thread(BluezMock)
        stack.callback(bluez.close)
        await asyncio.to_thread(bluez.add_adapter, "hci0")
        room = await asyncio.to_thread(bluez.add_device, ROOM_MAC, "room")
        tag = await asyncio.to_thread(bluez.add_device, TAG_MAC, "Ruuvi 884F")
        bindkey = work / "room.bindkey"
        bindkey.write_text(BINDKEY.hex() + "\n")
        bindkey.chmod(0o600)

        gateway_key = work / "gateway-ssh" / "ssh_ed25519"
        gateway_public = await asyncio.to_thread(make_key, gateway_key, GATEWAY)
        sshd = Sshd(work / "bastion")
        remote = f"127.0.0.1:{free_port()}"
        sshd.authorize(gateway_public, listen=[remote])
        await asyncio.to_thread(sshd.start)
        stack.callback(sshd.stop)

        jobs = [tasks.create_task(job, name=f"peer {i}") for i, job in
                enumerate((gnss.run(), scale.run(), Advertiser(bluez, room, tag).run()))]

        async def unplug_gps() -> None:
            gnss.plugged.clear()
            await gps_cable.stop()

        async def plug_gps() -> None:
            await gps_cable.start()
            gnss.plugged.set()

        async def adapter_off() -> None:
            await asyncio.to_thread(bluez.mock.SetPowered, "hci0", False)

        async def adapter_on() -> None:
            await asyncio.to_thread(bluez.mock.SetPowered, "hci0", True)

        async def setpoint() -> int:
            return int((await plc.values(1, "hr", 200, 1))[0])

        fast = {"reopen_delay": "100ms", "reopen_delay_max": "500ms"}
        devices = (
            BenchDevice("plc", {
                "driver": "modbus", "url": f"tcp://127.0.0.1:{plc_port}", "unit_id": 1,
                "poll": "200ms", "points": [
                    {"name": "model", "address": "hr:0", "type": "uint16"},
                    {"name": "temperature", "address": "ir:10", "type": "int16",
                     "scale": 0.1, "unit": "Cel"},
                    {"name": "power", "address": "hr:100", "type": "float32", "order": "CDAB",
                     "unit": "W"},
                    {"name": "setpoint", "address": "hr:200", "type": "int16",
                     "writable": {"min": 20, "max": 80}}]},
                (Expectation("model", 4711), Expectation("temperature", min=21.4, max=21.6),
                 Expectation("power", 3.25), Expectation("setpoint", SETPOINT))),
            *(BenchDevice(f"meter{unit}", {
                "driver": "modbus", "url": f"rtu://{rtu_master}?baudrate=115200&parity=N",
                "unit_id": unit, "poll": "250ms", "timeout": "1s", "points": [
                    {"name": "energy", "address": "ir:0", "type": "uint32", "unit": "Wh"},
                    {"name": "voltage", "address": "ir:2", "type": "uint16", "scale": 0.1,
                     "unit": "V"}]},
                (Expectation("energy", energy), Expectation("voltage", min=volts - 0.05,
                                                            max=volts + 0.05)))
              for unit, energy, volts in ((1, 123456, 230.0), (2, 654321, 231.5))),
            BenchDevice("gps", {"driver": "serial", "port": str(gps_cable.dev),
                                "baudrate": 9600, "protocol": "nmea", **fast},
                        (Expectation("latitude", min=47.28523, max=47.28524),
                         Expectation("longitude", min=8.56525, max=8.56526),
                         Expectation("altitude", 499.6), Expectation("satellites", 12),
                         Expectation("fix_quality", 1), Expectation("speed", 0.0))),
            BenchDevice("scale", {
                "driver": "serial", "port": str(scale_cable.dev), "baudrate": 9600,
                "protocol": "lines", "terminator": "\r\n", "parser": "regex",
                "pattern": r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)\s*kg",
                "fields": [{"name": "weight", "unit": "kg"},
                           {"name": "stable", "group": "status", "type": "string"}],
                "poll": "250ms", "query": "S\\r\\n", "timeout": "200ms", **fast},
                (Expectation("weight", min=12.5, max=12.6), Expectation("stable", "ST"))),
            BenchDevice("room", {"driver": "ble", "address": ROOM_MAC, "format": "bthome",
                                 "bindkey_file": str(bindkey), "rescan_delay": "100ms",
                                 "rescan_delay_max": "500ms"},
                        (Expectation("temperature", min=21.5, max=22.0),
                         Expectation("humidity", min=50.0, max=51.0),
                         Expectation("battery", 87))),
            BenchDevice("tag", {"driver": "ble", "address": TAG_MAC, "format": "ruuvi",
                                "rescan_delay": "100ms", "rescan_delay_max": "500ms"},
                        (Expectation("temperature", min=22.0, max=22.2),
                         Expectation("humidity", min=50.0, max=50.25),
                         Expectation("pressure", 101325), Expectation("battery_voltage", 3.0))),
        )
        bench = Bench(
            name="virtual",
            gateway_id=GATEWAY,
            broker=Broker(url=f"mqtts://127.0.0.1:{broker.tls_port}", ca_file=pki.ca,
                          topic_prefix=f"gateways/{GATEWAY}", uplink={"auth": {"type": "none"}}),
            devices=devices,
            writes=(WriteCheck("plc", "setpoint", 42, landed=setpoint),),
            replugs=(Replug("the GNSS receiver's serial cable", ("gps",),
                            actions=(unplug_gps, plug_gps)),
                     Replug("the BLE adapter hci0 (power cycle)", ("room", "tag"),
                            actions=(adapter_off, adapter_on))),
            tunnel=TunnelBench(
                {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                 "host_key": f"[127.0.0.1]:{sshd.port} {sshd.host_key}",
                 "key_file": str(gateway_key), "connect_timeout": "10s"},
                remote=remote, command=("socat", "-", f"TCP:{remote}")),
            env={"DBUS_SYSTEM_BUS_ADDRESS": bluez.bus.address},
            timeout=30.0 if quick else 60.0,
            readings=2 if quick else 5,
        )
        try:
            yield bench
        finally:
            for job in jobs:  # the peers' own loops run until the bench goes down
                job.cancel()


def virtual_work_dir(base: Path) -> Path:
    """A folder for the peers; socket paths stay short (Unix sockets: 107 bytes)."""
    path = base / "peers"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
