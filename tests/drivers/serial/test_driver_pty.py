"""The driver on a real pty pair (socat) against device emulators: streaming NMEA,
line noise, a polled instrument, binary frames, unplug and replug, locks, cleanup."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from gatewayd.drivers.serial.checksums import crc16_modbus
from gatewayd.drivers.serial.nmea import format_sentence

from tests.peers.serial_device import EmulatedPort, Instrument
from tests.peers.serial_pty import SocatPair

from .support import CAPTURES, ListSink, make_driver, running, ublox_epoch, until

pytestmark = pytest.mark.timeout(60)

FAST_REOPEN = {"reopen_delay": "20ms", "reopen_delay_max": "100ms"}
UBLOX = (CAPTURES / "ublox_m8_drive.nmea").read_bytes()
DEADLINE = 15.0  # seconds any single wait may take before the test fails


def gps(port: Path | str, **extra: Any) -> dict[str, Any]:
    return {"port": str(port), "protocol": "nmea", **FAST_REOPEN, **extra}


def epochs(first: int, last: int) -> list[tuple[str, object, str | None]]:
    units = {"latitude": "lat", "longitude": "lon", "altitude": "m", "speed": "m/s",
             "course": "deg"}
    return [(name, value, units.get(name)) for i in range(first, last)
            for name, value in ublox_epoch(i)]


def split_ublox_before_epoch(n: int) -> tuple[bytes, bytes]:
    """The capture cut just before the RMC that starts epoch ``n``."""
    lines = UBLOX.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"$GNRMC")]
    cut = starts[n]
    return b"".join(lines[:cut]), b"".join(lines[cut:])


async def test_streams_an_nmea_capture(cable: SocatPair) -> None:
    driver = make_driver(gps(cable.dev))
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await driver.wait_state("connected")
        with EmulatedPort(cable.emu) as device:
            await device.write(UBLOX)
            await sink.wait_count(88)
    assert sink.values() == epochs(0, 8)
    assert {r.device for r in sink.readings} == {"gps"}
    assert all(r.time > 0 for r in sink.readings)
    h = driver.health()
    assert (h["lines_ok"], h["ignored"], h["checksum_errors"], h["parse_errors"]) == (48, 35, 0, 0)
    assert h["bytes_in"] == len(UBLOX)
    assert h["device_path"].startswith("/dev/pts/")
    assert h["state"] == "disconnected"  # the run was cancelled: the port is closed


async def test_line_noise_and_bad_checksums_are_counted(cable: SocatPair) -> None:
    driver = make_driver(gps(cable.dev))
    sink = ListSink()
    noise = (bytes(range(256)) * 3 + b"\n"                         # wrong baud rate: 4 lines
             + format_sentence("GNGGA,1,2,3")[:-4] + b"00\r\n"      # checksum error
             + b"$GNGGA,083559.00,4717.11437,N\r\n"                 # cut short
             + b"$" + b"Z" * 400 + b"\r\n")                         # oversize
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await driver.wait_state("connected")
        with EmulatedPort(cable.emu) as device:
            await device.write(noise + UBLOX)
            await sink.wait_count(88)
    assert sink.values() == epochs(0, 8)
    h = driver.health()
    # the noise is cut at each 0x0A: one line without a '$', three with non-ASCII bytes
    assert (h["lines_ok"], h["checksum_errors"], h["parse_errors"], h["oversize_discarded"]) \
        == (48, 1, 4 + 1, 1)
    assert h["last_protocol_error"] is not None


async def test_unplug_reports_disconnected_and_recovers_by_itself(
        cable: SocatPair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewayd.drivers.serial")
    before, after = split_ublox_before_epoch(3)
    driver = make_driver(gps(cable.dev))
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await driver.wait_state("connected")
        first_pts = driver.health()["device_path"]
        with EmulatedPort(cable.emu) as device:
            await device.write(before)
            await sink.wait_count(33)

        await cable.stop()  # the adapter is pulled out
        await driver.wait_state("disconnected")
        h = driver.health()
        assert (h["state"], h["disconnects"], h["connected_since"]) == ("disconnected", 1, None)
        assert h["last_error"] == f"{cable.dev}: end of file (adapter unplugged?)"
        await until(driver, lambda h: h["reopen_attempts"] >= 2)  # it keeps trying
        assert driver.health()["last_error"] == (
            f"cannot open {cable.dev}: No such file or directory")
        assert len(sink.readings) == 33  # nothing arrives while it is gone

        await cable.start()  # plugged back in: same link path, new pty behind it
        await driver.wait_state("connected")
        with EmulatedPort(cable.emu) as device:
            await device.write(after)
            await sink.wait_count(88)
        h = driver.health()
    assert sink.values() == epochs(0, 8)
    assert (h["state"], h["connects"], h["disconnects"]) == ("connected", 2, 1)
    assert h["device_path"].startswith("/dev/pts/") and first_pts.startswith("/dev/pts/")
    assert (h["lines_ok"], h["checksum_errors"], h["parse_errors"]) == (48, 0, 0)
    records = [r for r in caplog.records if r.name.startswith("gatewayd.drivers.serial")]
    assert all(r.exc_info is None for r in records)  # expected faults: no tracebacks
    assert [r.getMessage() for r in records if r.levelno == logging.WARNING] == [
        f"device gps: disconnected: {cable.dev}: end of file (adapter unplugged?); reopening",
        f"device gps: cannot open {cable.dev}: No such file or directory; "
        "retrying, 0.02s doubling up to 0.1s",
    ]


async def test_a_port_that_appears_later_is_opened(tmp_path: Path) -> None:
    pair = SocatPair(tmp_path / "later")
    driver = make_driver(gps(pair.dev, points=["satellites"]))
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await until(driver, lambda h: h["reopen_attempts"] >= 3)
        assert driver.health()["state"] == "disconnected"
        async with pair:
            await driver.wait_state("connected")
            with EmulatedPort(pair.emu) as device:
                await device.write(UBLOX)
                await sink.wait_count(8)
    assert sink.values() == [("satellites", 12, None)] * 8
    assert driver.health()["connects"] == 1


SCALE = {"protocol": "lines", "parser": "regex",
         "pattern": r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)kg",
         "fields": [{"name": "weight", "unit": "kg"}, {"name": "stable", "type": "string",
                                                        "group": "status"}],
         "poll": "300ms", "query": "R\\r\\n", "timeout": "250ms", **FAST_REOPEN}


async def test_polled_instrument_answers_queries(cable: SocatPair) -> None:
    replies = [b"ST,GS,+0012.34kg\r\n", None, b"US,GS,+0012.40kg\r\n", b"ST,GS,+0012.41kg\r\n"]
    driver = make_driver({"port": str(cable.dev), **SCALE}, name="scale")
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await driver.wait_state("connected")
        with EmulatedPort(cable.emu) as port:
            scale = Instrument(port, query=b"R\r\n",
                               reply=lambda n: replies[n] if n < len(replies) else None)
            async with asyncio.TaskGroup() as tg:
                serving = tg.create_task(scale.run())
                await sink.wait_count(6)
                await until(driver, lambda h: h["polls"] >= 4)
                serving.cancel()
        h = driver.health()
    assert sink.values() == [("weight", 12.34, "kg"), ("stable", "ST", None),
                             ("weight", 12.40, "kg"), ("stable", "US", None),
                             ("weight", 12.41, "kg"), ("stable", "ST", None)]
    assert {r.device for r in sink.readings} == {"scale"}
    assert bytes(scale.received) == b"R\r\n" * scale.queries
    assert (h["timeouts"], h["lines_ok"], h["parse_errors"]) == (1, 3, 0)
    assert h["polls"] == scale.queries


async def test_binary_frames_between_garbage(cable: SocatPair) -> None:
    def frame(power: int, decivolts: int) -> bytes:
        body = bytes([6]) + power.to_bytes(4, "big", signed=True) + decivolts.to_bytes(2, "big")
        return b"\xaa\x55" + body + crc16_modbus(body).to_bytes(2, "little")

    corrupt = bytearray(frame(1, 1))
    corrupt[5] ^= 0x40
    driver = make_driver({
        "port": str(cable.dev), "protocol": "frames", **FAST_REOPEN,
        "frame": {"start": "AA 55", "length": {"at": 2},
                  "checksum": {"kind": "crc16-modbus", "from": 2}},
        "fields": [{"name": "power", "at": 3, "type": "int32", "unit": "W"},
                   {"name": "voltage", "at": 7, "type": "uint16", "scale": 0.1, "unit": "V"}],
    }, name="meter")
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(driver, sink):
        await driver.wait_state("connected")
        with EmulatedPort(cable.emu) as device:
            await device.write(b"\x00\x13" + frame(-1500, 2304) + bytes(corrupt) + b"\xaa"
                               + frame(2000, 2299))
            await sink.wait_count(4)
    assert sink.values() == [("power", -1500, "W"), ("voltage", 2304 * 0.1, "V"),
                             ("power", 2000, "W"), ("voltage", 2299 * 0.1, "V")]
    h = driver.health()
    assert (h["frames_ok"], h["checksum_errors"], h["discarded_bytes"]) == (2, 1, 2 + 11 + 1)


async def test_a_port_held_by_another_driver_is_reported_busy(cable: SocatPair) -> None:
    first, second = make_driver(gps(cable.dev)), make_driver(gps(cable.dev), name="gps2")
    sink = ListSink()
    async with asyncio.timeout(DEADLINE), running(first, sink):
        await first.wait_state("connected")
        async with running(second, sink):
            await until(second, lambda h: h["reopen_attempts"] >= 1)
            h = second.health()
    assert h["state"] == "disconnected"
    assert h["last_error"] == (
        f"cannot open {cable.dev}: in use by another process (exclusive lock held)")


async def test_not_a_serial_port(tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_bytes(b"")
    driver = make_driver(gps(plain))
    async with asyncio.timeout(DEADLINE), running(driver, ListSink()):
        await until(driver, lambda h: h["reopen_attempts"] >= 1)
    assert driver.health()["last_error"] == (
        f"cannot open {plain}: Could not configure port: (25, 'Inappropriate ioctl for device')")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_cancel_closes_the_port_and_leaks_nothing(cable: SocatPair) -> None:
    driver = make_driver(gps(cable.dev))
    for _ in range(3):
        before = open_fds()
        async with asyncio.timeout(DEADLINE), running(driver, ListSink()):
            await driver.wait_state("connected")
            assert len(open_fds() - before) >= 1
        assert open_fds() == before
        assert driver.health()["state"] == "disconnected"
    assert driver.health()["connects"] == 3
