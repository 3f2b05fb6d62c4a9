"""The ble driver: one advertising sensor (BTHome, Ruuvi, pvvx), one GATT device,
or a discovery listing of the sensors nobody configured.

An advertising device listens on its adapter's shared scanner
(:mod:`.adapter`); each advertisement is decoded by the pure decoders, checked
for replay and repeats (:class:`~.adverts.AdvertFilter`), and its new
measurements go to the sink. When bluetoothd loses the scan (adapter powered
off or removed, bluetoothd restarted, discovery stopped) the scan is rebuilt
by itself, with a doubling backoff (``rescan_delay`` to ``rescan_delay_max``)
while the adapter is unusable.

A GATT device is connected (one attempt at a time per adapter, bounded by
``connect_timeout``), its characteristics are read every ``poll`` or subscribed
to, and after any disconnect it is connected again with a doubling backoff
(``reconnect_delay`` to ``reconnect_delay_max``), forever. Stopping the device
disconnects it cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic

from gatewayd.changes import Changes
from gatewayd.config.section import Section
from gatewayd.driver import DeviceConfig, Driver, Sink
from gatewayd.errors import DriverError, WriteRefused
from gatewayd.reading import Reading, Value, now_ns

from .adapter import BLEAK_ERRORS, Advert, BleAdapter, open_adapter
from .adverts import AdvertFilter, decode, detect, payload_of
from .config import BleOptions, Characteristic, parse_options
from .errors import AdvertisementError, BleUnavailable, ConnectFailed
from .gatt import decode_value, encode_value
from .packet import Measurement

log = logging.getLogger(__name__)

DISCONNECT_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0


def load_bindkey(path: os.PathLike[str] | str, *, device: str) -> bytes:
    """The 16-byte BTHome bind key written as 32 hex digits in ``path``.

    Raises DriverError when the file is missing, readable by everyone, or holds
    no key (the key itself is never part of the message).
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(256)
    except OSError as err:
        raise DriverError(f"cannot read bindkey_file {path}: {err.strerror}",
                          device=device) from err
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise DriverError(f"bindkey_file {path} is readable by every user (mode "
                          f"{stat.S_IMODE(mode):04o}); expected 0600 or stricter", device=device)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 16:
        raise DriverError(f"bindkey_file {path} does not hold a bind key; expected 32 hex "
                          "digits", device=device)
    return key


def _json_value(value: Value) -> Any:
    return value.hex() if isinstance(value, bytes) else value


class BleDriver(Driver):
    """One BLE device (or a discovery listing) on one adapter."""

    kind = "ble"

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.options: BleOptions = device.options
        self.state = "stopped"
        self.adverts = 0  # advertisements heard from the address
        self.packets = 0  # of them, decoded new data
        self.duplicates = 0
        self.without_payload = 0  # heard, but carrying no payload of the format
        self.unknown_objects = 0  # BTHome packets cut at an object id not known here
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.rssi: int | None = None
        self.last_seen: float | None = None
        self.values: dict[str, dict[str, Any]] = {}
        self.discovered: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.filter = AdvertFilter(window=self.options.duplicate_window)
        # GATT
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.reads = 0
        self.read_errors = 0
        self.notifications = 0
        self.writes = 0
        self.writes_refused = 0
        self.write_errors = 0
        self.connected_since: float | None = None
        self._adapter: BleAdapter | None = None
        self._client: BleakClient | None = None
        self._bindkey: bytes | None = None
        self._logged: set[str] = set()
        self._changes = Changes()

    @classmethod
    def parse_options(cls, section: Section) -> BleOptions:
        return parse_options(section)

    # ---- status ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {
            "state": self.state,
            "address": o.address,
            "format": "discovery" if o.discovery else o.format,
            "adapter": self._adapter.health() if self._adapter else {"adapter": o.adapter},
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
        if o.discovery:
            now = time.time()
            out["discovered"] = [
                {**{k: v for k, v in d.items() if k != "last_seen"},
                 "last_seen_age_s": round(now - d["last_seen"], 3)}
                for d in reversed(self.discovered.values())
            ]
            out["discovered_count"] = len(self.discovered)
            return out
        out["rssi"] = self.rssi
        out["last_seen_age_s"] = (round(time.time() - self.last_seen, 3)
                                  if self.last_seen else None)
        out["values"] = self.values
        if o.format == "gatt":
            out.update(connects=self.connects, disconnects=self.disconnects,
                       connect_failures=self.connect_failures,
                       connected_since=self.connected_since, reads=self.reads,
                       read_errors=self.read_errors, notifications=self.notifications,
                       writes=self.writes, writes_refused=self.writes_refused,
                       write_errors=self.write_errors)
        else:
            out.update(adverts=self.adverts, packets=self.packets, duplicates=self.duplicates,
                       without_payload=self.without_payload,
                       unknown_objects=self.unknown_objects, decode_errors=dict(self.errors),
                       encryption_counter=self.filter.last_counter)
        return out

    async def wait_until(self, predicate: Callable[[BleDriver], bool]) -> None:
        """Return once ``predicate(self)`` holds; checked after every change (bound the
        wait with a timeout)."""
        await self._changes.until(lambda: self, predicate)

    def _notify(self) -> None:
        self._changes.notify()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
        self._notify()

    def _error(self, text: str, *, key: str, level: int = logging.WARNING) -> None:
        """Record an error; log it once per kind (later ones are only counted)."""
        self.last_error = text
        self.last_error_at = time.time()
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, "device %s: %s", self.name, text)
        else:
            log.debug("device %s: %s", self.name, text)
        self._notify()

    # ---- the device's life ----------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        o = self.options
        if o.bindkey_file is not None:
            self._bindkey = load_bindkey(o.bindkey_file, device=self.name)
        try:
            async with open_adapter(o.adapter, device=self.name) as adapter:
                self._adapter = adapter
                if o.discovery:
                    with adapter.discover(self.name, self._on_discovered, scan_mode=o.scan_mode):
                        await self._keep_scanning(adapter)
                elif o.format == "gatt":
                    assert o.address is not None
                    # Claimed so that discovery does not list it; adverts only refresh RSSI.
                    with adapter.listen(self.name, o.address, "gatt", self._on_gatt_advert,
                                        scan_mode=o.scan_mode):
                        await self._keep_connected(adapter, sink)
                else:
                    assert o.address is not None and o.format is not None
                    with adapter.listen(self.name, o.address, o.format,
                                        lambda advert: self._on_advert(advert, sink),
                                        scan_mode=o.scan_mode):
                        await self._keep_scanning(adapter)
        finally:
            self._adapter = None
            self._set_state("stopped")

    async def _keep_scanning(self, adapter: BleAdapter) -> None:
        o = self.options
        delay = 0.0
        while True:
            try:
                await adapter.ensure_scanning(self.name)
            except BleUnavailable as err:
                self._set_state("waiting")
                delay = o.rescan_delay if delay == 0.0 else min(delay * 2, o.rescan_delay_max)
                self._error(f"{err}; trying again within {delay:g}s", key="scan")
                if adapter.watch.usable:
                    await asyncio.sleep(delay)
                else:
                    await adapter.wait_usable(within=delay)
                continue
            if delay:
                log.info("device %s: scanning again on %s", self.name, adapter.name)
                self._logged.discard("scan")
            delay = 0.0
            self._set_state("scanning")
            reason = await adapter.wait_trouble()
            self._set_state("waiting")
            self._error(f"{reason}; scanning again", key="scan")

    # ---- advertisements ---------------------------------------------------------------

    def _on_advert(self, advert: Advert, sink: Sink) -> None:
        o = self.options
        assert o.format is not None
        self.adverts += 1
        self.rssi = advert.rssi
        self.last_seen = time.time()
        payload = payload_of(o.format, advert.service_data, advert.manufacturer_data)
        if payload is None:
            self.without_payload += 1
            self._notify()
            return
        try:
            packet = decode(o.format, payload, mac=o.mac, bindkey=self._bindkey)
            new = self.filter.accept(packet, time.monotonic())
        except AdvertisementError as err:
            self.errors[err.reason] = self.errors.get(err.reason, 0) + 1
            self._error(str(err), key=f"decode:{err.reason}")
            return
        if packet.stopped_at is not None:
            self.unknown_objects += 1
            if f"object:{packet.stopped_at}" not in self._logged:
                self._logged.add(f"object:{packet.stopped_at}")
                log.info("device %s: BTHome object id 0x%02x is not known here; the objects "
                         "after it are skipped", self.name, packet.stopped_at)
        if not new:
            self.duplicates += 1
            self._notify()
            return
        self.packets += 1
        self._submit(sink, packet.measurements)

    def _submit(self, sink: Sink,
                measurements: tuple[Measurement, ...] | list[Measurement]) -> None:
        at = now_ns()
        readings = [Reading(self.name, m.name, m.value, m.unit, at) for m in measurements]
        for m in measurements:
            self.values[m.name] = {"value": _json_value(m.value), "unit": m.unit, "time": at}
        if readings:
            sink.submit(readings)
        self._notify()

    def _on_gatt_advert(self, advert: Advert) -> None:
        self.rssi = advert.rssi
        self.last_seen = time.time()

    def _on_discovered(self, advert: Advert) -> None:
        fmt = detect(advert.service_data, advert.manufacturer_data)
        entry = self.discovered.get(advert.address)
        if entry is None:
            entry = {"address": advert.address, "adverts": 0}
            self.discovered[advert.address] = entry
            while len(self.discovered) > self.options.max_discovered:
                self.discovered.popitem(last=False)
        self.discovered.move_to_end(advert.address)
        entry.update(name=advert.name, rssi=advert.rssi, format=fmt, last_seen=time.time())
        entry["adverts"] += 1
        if fmt is not None:
            payload = payload_of(fmt, advert.service_data, advert.manufacturer_data)
            assert payload is not None
            try:
                packet = decode(fmt, payload)
            except AdvertisementError as err:
                entry["decoded"] = {"error": err.reason}
            else:
                entry["decoded"] = {m.name: _json_value(m.value) for m in packet.measurements}
        self._notify()

    # ---- GATT -----------------------------------------------------------------------

    async def _keep_connected(self, adapter: BleAdapter, sink: Sink) -> None:
        o = self.options
        delay = 0.0
        while True:
            try:
                client, lost = await self._connect(adapter)
            except (BleUnavailable, ConnectFailed, *BLEAK_ERRORS) as err:
                self.connect_failures += 1
                delay = o.reconnect_delay if delay == 0.0 else min(delay * 2,
                                                                   o.reconnect_delay_max)
                self._set_state("disconnected")
                self._error(f"cannot connect: {err or type(err).__name__}; trying again in "
                            f"{delay:g}s", key="connect")
                if adapter.watch.usable:
                    await asyncio.sleep(delay)
                else:
                    await adapter.wait_usable(within=delay)
                continue
            delay = 0.0
            self._logged.discard("connect")
            try:
                await self._session(client, lost, sink)
            except* (ConnectFailed, *BLEAK_ERRORS) as group:
                self.disconnects += 1
                self._error(f"disconnected: {group.exceptions[0]}; reconnecting",
                            key="disconnect", level=logging.INFO)
            finally:
                self._client = None
                self.connected_since = None
                await self._disconnect(client)
                self._set_state("disconnected")
            await asyncio.sleep(o.reconnect_delay)

    async def _connect(self, adapter: BleAdapter) -> tuple[BleakClient, asyncio.Event]:
        o = self.options
        assert o.address is not None
        if not adapter.watch.usable:
            raise BleUnavailable(adapter.watch.problem(), device=self.name)
        lost = asyncio.Event()
        async with adapter.connection_slot():
            self._set_state("connecting")
            target = adapter.known_device(o.address) or o.address
            client = BleakClient(target, disconnected_callback=lambda _c: lost.set(),
                                 timeout=o.connect_timeout, bluez={"adapter": adapter.name})
            try:
                async with asyncio.timeout(o.connect_timeout + 5.0):
                    await client.connect()
            except TimeoutError as err:
                raise ConnectFailed(f"no connection within {o.connect_timeout:g}s",
                                    device=self.name) from err
            except BLEAK_ERRORS:
                adapter.forget(o.address)  # a stale BlueZ object: look for it anew next time
                raise
        return client, lost

    async def _disconnect(self, client: BleakClient) -> None:
        if not client.is_connected:
            return
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await client.disconnect()
        except BLEAK_ERRORS as err:
            log.debug("device %s: disconnect: %s", self.name, err)

    async def _session(self, client: BleakClient, lost: asyncio.Event, sink: Sink) -> None:
        o = self.options
        self._client = client
        self.connects += 1
        self.connected_since = time.time()
        self._set_state("connected")
        log.info("device %s: connected to %s", self.name, o.address)
        found: dict[str, BleakGATTCharacteristic] = {}
        for char in o.characteristics:
            gatt_char = client.services.get_characteristic(char.uuid)
            if gatt_char is None:
                self._error(f"characteristic {char.uuid} ({char.name}) not found on the device",
                            key=f"missing:{char.uuid}")
                continue
            found[char.uuid] = gatt_char
        # Every value is read once; notifying ones then arrive by notification.
        await self._read(client, found, [c for c in o.characteristics if c.uuid in found], sink)
        for uuid in sorted({c.uuid for c in o.characteristics if c.notify and c.uuid in found}):
            await client.start_notify(found[uuid], self._notify_callback(uuid, sink))
        polled = [c for c in o.characteristics if not c.notify and c.uuid in found]
        async with asyncio.TaskGroup() as tg:
            if polled:
                tg.create_task(self._poll(client, found, polled, sink),
                               name=f"ble {self.name} poll")
            await lost.wait()
            raise ConnectFailed("the device disconnected", device=self.name)

    async def _poll(self, client: BleakClient, found: dict[str, BleakGATTCharacteristic],
                    chars: list[Characteristic], sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.options.poll
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.options.poll
            if next_at < loop.time():  # late by whole periods: skip them
                next_at = loop.time() + self.options.poll
            await self._read(client, found, chars, sink)

    async def _read(self, client: BleakClient, found: dict[str, BleakGATTCharacteristic],
                    chars: list[Characteristic], sink: Sink) -> None:
        values: dict[str, bytes] = {}
        for uuid in dict.fromkeys(c.uuid for c in chars):
            try:
                values[uuid] = bytes(await client.read_gatt_char(found[uuid]))
            except BLEAK_ERRORS as err:
                if not client.is_connected:
                    raise ConnectFailed(f"read failed: {err}", device=self.name) from err
                self.read_errors += 1
                self._error(f"reading {uuid}: {err}", key=f"read:{uuid}")
                continue
            self.reads += 1
        self._decode_chars([c for c in chars if c.uuid in values],
                           lambda c: values[c.uuid], sink)

    def _notify_callback(self, uuid: str, sink: Sink
                         ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        chars = [c for c in self.options.characteristics if c.uuid == uuid]

        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self.notifications += 1
            value = bytes(data)
            self._decode_chars(chars, lambda _c: value, sink)

        return on_notify

    def _decode_chars(self, chars: list[Characteristic], data_of: Callable[[Characteristic], bytes],
                      sink: Sink) -> None:
        out: list[Measurement] = []
        for char in chars:
            try:
                value = decode_value(char.layout, data_of(char))
            except AdvertisementError as err:
                self.errors[err.reason] = self.errors.get(err.reason, 0) + 1
                self._error(f"{char.name}: {err}", key=f"decode:{char.name}")
                continue
            out.append(Measurement(char.name, value, char.unit))
        if out:
            self._submit(sink, out)

    # ---- writes ---------------------------------------------------------------------

    async def write(self, point: str, value: Value) -> None:
        """Write ``value`` (engineering units) to the characteristic of ``point``.

        Raises WriteRefused when the point is unknown or not writable, or the value
        is of the wrong kind, out of range or does not fit; DriverError when the
        device is not connected or does not take the write.
        """
        char = self.options.characteristic(point)
        try:
            if char is None or char.writable is None:
                raise WriteRefused("point is not writable" if char else f"no point {point!r}",
                                   device=self.name, point=point)
            rng = char.writable
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    (rng.min is not None and value < rng.min)
                    or (rng.max is not None and value > rng.max)):
                lo = "-inf" if rng.min is None else f"{rng.min:g}"
                hi = "inf" if rng.max is None else f"{rng.max:g}"
                raise WriteRefused(f"value {value:g} is out of range [{lo}, {hi}]",
                                   device=self.name, point=point)
            try:
                data = encode_value(char.layout, value)
            except ValueError as err:
                raise WriteRefused(str(err), device=self.name, point=point) from None
        except WriteRefused as err:
            self.writes_refused += 1
            log.warning("device %s: write to %s refused: %s", self.name, point, err)
            raise
        client = self._client
        if client is None or not client.is_connected:
            raise DriverError("device is not connected", device=self.name, point=point)
        self.writes += 1
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await client.write_gatt_char(char.uuid, data, response=True)
        except BLEAK_ERRORS as err:
            self.write_errors += 1
            log.warning("device %s: write to %s failed: %s", self.name, point, err)
            raise DriverError(f"write failed: {err or type(err).__name__}", device=self.name,
                              point=point) from err
        log.info("device %s: wrote %r to %s", self.name, value, point)

