"""The I/O side of one Bluetooth adapter: bleak for scanning and GATT, and a
watch on bluetoothd's D-Bus signals for the adapter's own state.

Every ble device naming the same adapter (``hci0``) shares one
:class:`BleAdapter`, found in a module-level registry and reference-counted
by :func:`open_adapter`. The adapter

- runs one bleak scanner for all of them (passive with advertisement monitor
  patterns where bluetoothd offers ``AdvertisementMonitorManager1``, active
  otherwise or when a device asks for it) and hands each advertisement to the
  device that listens for its address (or to discovery listeners);
- watches bluetoothd over D-Bus (:class:`AdapterWatch`): the adapter powered
  off, removed, its discovery stopped behind our back, or bluetoothd
  restarted all mark the scanner broken, and the next :meth:`ensure_scanning`
  builds a new one. Devices wait in :meth:`wait_trouble`; no task of its own
  runs here;
- lets one GATT connection attempt run at a time (:meth:`connection_slot`):
  bluetoothd handles concurrent connects badly, and every attempt is bounded
  by the device's ``connect_timeout``, so a device that never answers cannot
  hold the adapter;
- converts bleak and D-Bus errors into :class:`BleUnavailable` where they
  enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from gatewayd.changes import Changes

from .errors import BleUnavailable

log = logging.getLogger(__name__)

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
MONITOR_MANAGER_IFACE = "org.bluez.AdvertisementMonitorManager1"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"

# Advertisement monitor patterns (passive scanning) of the advertising formats.
PATTERNS: dict[str, OrPattern] = {
    "bthome": OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc"),
    "pvvx": OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\x1a\x18"),
    "ruuvi": OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x99\x04"),
}
SCANNER_TIMEOUT = 10.0  # bound on starting or stopping a scan (D-Bus round trips)
DISCOVERY_GRACE = 5.0  # how long "Discovering" may stay false before the scan is rebuilt
MAX_SEEN = 1024  # devices remembered for connecting without a new scan

BLEAK_ERRORS = (BleakError, DBusError, EOFError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Advert:
    """One advertisement as bluetoothd reported it."""

    address: str  # upper case, colon separated
    name: str | None
    rssi: int
    service_data: dict[str, bytes]
    manufacturer_data: dict[int, bytes]


AdvertCallback = Callable[[Advert], None]


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


class AdapterWatch:
    """bluetoothd's view of one adapter, kept current from D-Bus signals."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.path = f"/org/bluez/{adapter}"
        self.present = False
        self.powered = False
        self.discovering = False
        self.monitor_supported = False
        self.bluez_running = False
        self.bluez_restarts = 0  # times org.bluez got a new owner since we watch
        self._bus: MessageBus | None = None
        self._changes = Changes()
        self._refresh: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return self.bluez_running and self.present and self.powered

    def problem(self) -> str:
        if not self.bluez_running:
            return "bluetoothd is not running"
        if not self.present:
            return f"adapter {self.adapter} not found"
        if not self.powered:
            return f"adapter {self.adapter} is powered off"
        return ""

    async def open(self) -> None:
        """Connect to the system bus and read the adapter's state. Raises BleUnavailable."""
        bus = MessageBus(bus_type=BusType.SYSTEM)
        try:
            await bus.connect()
            bus.add_message_handler(self._on_message)
            for rule in (
                f"type='signal',interface='{PROPERTIES_IFACE}',member='PropertiesChanged',"
                f"path='{self.path}'",
                f"type='signal',interface='{OBJECT_MANAGER_IFACE}',arg0path='{self.path}'",
                "type='signal',interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                f"arg0='{BLUEZ}'",
            ):
                await self._call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", "AddMatch", "s", [rule])
            owner = await self._call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "NameHasOwner", "s", [BLUEZ])
        except BLEAK_ERRORS as err:
            bus.disconnect()
            raise BleUnavailable(f"cannot reach the D-Bus system bus: {_describe(err)}",
                                 device=self.adapter) from err
        self._bus = bus
        self.bluez_running = bool(owner.body[0])
        await self._read_state()

    def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    async def wait_change(self) -> None:
        """Return at the next change of state."""
        await self._changes.wait()

    def poke(self) -> None:
        """Wake every waiter as if the state had changed."""
        self._notify()

    def _notify(self) -> None:
        self._changes.notify()

    @staticmethod
    async def _call(bus: MessageBus, destination: str, path: str, interface: str, member: str,
                    signature: str, body: list[Any]) -> Message:
        reply = await bus.call(Message(destination=destination, path=path, interface=interface,
                                       member=member, signature=signature, body=body))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name or "error", str(reply.body[0]) if reply.body else "")
        return reply

    async def _get_all(self, interface: str) -> dict[str, Any] | None:
        assert self._bus is not None
        try:
            reply = await self._call(self._bus, BLUEZ, self.path, PROPERTIES_IFACE, "GetAll",
                                     "s", [interface])
        except DBusError:
            return None
        return {k: v.value for k, v in reply.body[0].items()}

    async def _read_state(self) -> None:
        props = await self._get_all(ADAPTER_IFACE) if self.bluez_running else None
        self.present = props is not None
        self.powered = bool(props and props.get("Powered"))
        self.discovering = bool(props and props.get("Discovering"))
        monitor = await self._get_all(MONITOR_MANAGER_IFACE) if self.present else None
        self.monitor_supported = bool(monitor and "or_patterns" in
                                      monitor.get("SupportedMonitorTypes", []))
        self._notify()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "PropertiesChanged" and msg.path == self.path:
            interface, changed, _invalidated = msg.body
            if interface == ADAPTER_IFACE:
                self._apply(changed)
        elif msg.member == "InterfacesAdded" and msg.body[0] == self.path:
            props = msg.body[1].get(ADAPTER_IFACE)
            if props is not None:
                self.present = True
                self._apply(props)
                self._schedule_refresh()  # the monitor manager comes with the adapter
        elif msg.member == "InterfacesRemoved" and msg.body[0] == self.path:
            if ADAPTER_IFACE in msg.body[1]:
                self.present = self.powered = self.discovering = False
                self._notify()
        elif msg.member == "NameOwnerChanged" and msg.body[0] == BLUEZ:
            running = bool(msg.body[2])
            self.bluez_running = running
            if running:
                self.bluez_restarts += 1
                self._schedule_refresh()
            else:
                self.present = self.powered = self.discovering = False
            self._notify()

    def _apply(self, changed: dict[str, Variant]) -> None:
        if "Powered" in changed:
            self.powered = bool(changed["Powered"].value)
        if "Discovering" in changed:
            self.discovering = bool(changed["Discovering"].value)
        self._notify()

    def _schedule_refresh(self) -> None:
        # Reading the new state is a D-Bus round trip: it cannot run inside the
        # message handler. The task is owned here and cancelled by close().
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._read_state())


class BleAdapter:
    """One Bluetooth adapter shared by every ble device that names it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.watch = AdapterWatch(name)
        self.users: set[str] = set()
        self.listeners: dict[str, tuple[str, AdvertCallback]] = {}  # address -> (format, cb)
        self.discovery: dict[str, AdvertCallback] = {}  # device name -> callback
        self.scan_modes: dict[str, str] = {}  # device name -> auto | passive | active
        self.seen: OrderedDict[str, BLEDevice] = OrderedDict()
        self.mode: str | None = None  # passive | active while a scanner runs
        self.scans_started = 0
        self.scan_failures = 0
        self.last_error: str | None = None
        self._scanner: BleakScanner | None = None
        self._scan_formats: frozenset[str] = frozenset()
        self._scan_restarts_seen = 0
        self._broken = False
        self._opened = False
        self._lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self.connect_waiting = 0

    # ---- users -------------------------------------------------------------------------

    async def open(self) -> None:
        """Start watching bluetoothd (once). Raises BleUnavailable."""
        async with self._lock:
            if not self._opened:
                await self.watch.open()
                self._opened = True

    async def close(self) -> None:
        async with self._lock:
            await self._stop_scanner()
            self.watch.close()
            self._opened = False

    @contextlib.contextmanager
    def listen(self, device: str, address: str, fmt: str, callback: AdvertCallback,
               *, scan_mode: str) -> Any:
        """Hand ``address``'s advertisements to ``callback`` while in the block."""
        if address in self.listeners:
            raise BleUnavailable(f"address {address} is already used by another device on "
                                 f"{self.name}", device=device)
        self.listeners[address] = (fmt, callback)
        self.scan_modes[device] = scan_mode
        self._formats_changed()
        try:
            yield
        finally:
            self.listeners.pop(address, None)
            self.scan_modes.pop(device, None)

    @contextlib.contextmanager
    def discover(self, device: str, callback: AdvertCallback, *, scan_mode: str) -> Any:
        """Hand advertisements of addresses no device listens for to ``callback``."""
        self.discovery[device] = callback
        self.scan_modes[device] = scan_mode
        self._formats_changed()
        try:
            yield
        finally:
            self.discovery.pop(device, None)
            self.scan_modes.pop(device, None)

    def _wanted_formats(self) -> frozenset[str]:
        if self.discovery:
            return frozenset(PATTERNS)
        return frozenset(fmt for fmt, _cb in self.listeners.values() if fmt in PATTERNS)

    def _formats_changed(self) -> None:
        if self._scanner is not None and self.mode == "passive" and \
                not self._wanted_formats() <= self._scan_formats:
            self._broken = True  # the monitor lacks a pattern a new device needs
            self.watch.poke()

    # ---- scanning ----------------------------------------------------------------------

    def _choose_mode(self) -> str:
        modes = set(self.scan_modes.values())
        if "active" in modes:
            return "active"
        if "passive" in modes:
            return "passive"
        return "passive" if self.watch.monitor_supported else "active"

    async def ensure_scanning(self, device: str) -> None:
        """Make sure a healthy scanner runs. Raises BleUnavailable."""
        async with self._lock:
            if self._scanner is not None and not self._broken:
                return
            await self._stop_scanner()
            if not self.watch.usable:
                raise BleUnavailable(self.watch.problem(), device=device)
            mode = self._choose_mode()
            if mode == "passive" and not self.watch.monitor_supported:
                raise BleUnavailable(
                    f"passive scanning needs bluetoothd's advertisement monitor API on "
                    f"{self.name} (bluetoothd --experimental, BlueZ 5.56+); set scan_mode "
                    "= \"auto\" or \"active\"", device=device)
            formats = self._wanted_formats()
            kwargs: dict[str, Any] = {"adapter": self.name}
            if mode == "passive":
                kwargs["or_patterns"] = [PATTERNS[f] for f in sorted(formats)]
            scanner = BleakScanner(self._on_advert, scanning_mode=mode,  # type: ignore[arg-type]
                                   bluez=kwargs)  # type: ignore[arg-type]
            try:
                async with asyncio.timeout(SCANNER_TIMEOUT):
                    await scanner.start()
            except BLEAK_ERRORS as err:
                self.scan_failures += 1
                self.last_error = f"cannot start {mode} scanning: {_describe(err)}"
                with contextlib.suppress(*BLEAK_ERRORS):
                    await scanner.stop()
                raise BleUnavailable(self.last_error, device=device) from err
            self._scanner = scanner
            self._scan_formats = formats
            self._scan_restarts_seen = self.watch.bluez_restarts
            self._broken = False
            self.mode = mode
            self.scans_started += 1
            self.last_error = None
            log.info("adapter %s: %s scanning%s", self.name, mode,
                     f" for {', '.join(sorted(formats))}" if mode == "passive" else "")

    async def _stop_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        self.mode = None
        if scanner is None:
            return
        try:
            async with asyncio.timeout(SCANNER_TIMEOUT):
                await scanner.stop()
        except BLEAK_ERRORS as err:
            # bluetoothd forgot the session (powered off, restarted): nothing to stop.
            log.debug("adapter %s: stopping the old scan: %s", self.name, _describe(err))

    def _trouble(self) -> str | None:
        if self._broken:
            return "scan needs rebuilding"
        if not self.watch.usable:
            return self.watch.problem()
        if self.watch.bluez_restarts != self._scan_restarts_seen:
            return "bluetoothd restarted"
        return None

    async def wait_trouble(self) -> str:
        """Return (with the reason) once the running scan needs rebuilding."""
        while True:
            reason = self._trouble()
            if reason is None and self.mode == "active" and not self.watch.discovering:
                reason = await self._discovery_lost()
            if reason is not None:
                self._broken = True
                return reason
            await self.watch.wait_change()

    async def _discovery_lost(self) -> str | None:
        """bluetoothd may drop "Discovering" for a moment while it restarts a scan;
        only a stop that lasts DISCOVERY_GRACE counts."""
        try:
            async with asyncio.timeout(DISCOVERY_GRACE):
                while not self.watch.discovering and self._trouble() is None:
                    await self.watch.wait_change()
        except TimeoutError:
            return "discovery stopped"
        return self._trouble()

    async def wait_usable(self, within: float) -> None:
        """Wait up to ``within`` seconds for the adapter to be usable (returns either way)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not self.watch.usable:
                    await self.watch.wait_change()

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        self.seen[address] = device
        self.seen.move_to_end(address)
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)
        advert = Advert(address=address, name=adv.local_name, rssi=adv.rssi,
                        service_data={k.lower(): bytes(v) for k, v in adv.service_data.items()},
                        manufacturer_data={k: bytes(v) for k, v in adv.manufacturer_data.items()})
        listener = self.listeners.get(address)
        if listener is not None:
            listener[1](advert)
            return
        for callback in self.discovery.values():
            callback(advert)

    # ---- connections -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection_slot(self) -> AsyncIterator[None]:
        """Hold the adapter's one connection attempt for the block."""
        self.connect_waiting += 1
        try:
            async with self._connect_lock:
                self.connect_waiting -= 1
                try:
                    yield
                finally:
                    self.connect_waiting += 1
        finally:
            self.connect_waiting -= 1

    def known_device(self, address: str) -> BLEDevice | None:
        return self.seen.get(address)

    def forget(self, address: str) -> None:
        self.seen.pop(address, None)

    def health(self) -> dict[str, Any]:
        w = self.watch
        return {
            "adapter": self.name,
            "bluetoothd": "running" if w.bluez_running else "not running",
            "present": w.present,
            "powered": w.powered,
            "discovering": w.discovering,
            "passive_supported": w.monitor_supported,
            "scan": self.mode or "stopped",
            "scans_started": self.scans_started,
            "scan_failures": self.scan_failures,
            "bluetoothd_restarts": w.bluez_restarts,
            "connect_waiting": self.connect_waiting,
            "last_error": self.last_error,
            "shared_by": sorted(self.users),
        }


# ---- the registry ------------------------------------------------------------------

_adapters: dict[str, BleAdapter] = {}


def _quiet_library_logging() -> None:
    # bleak warns once per process that bluetoothctl is missing and logs D-Bus
    # failures itself; this module logs each event once, naming the adapter.
    # An explicit level set by the operator wins.
    library = logging.getLogger("bleak")
    if library.level == logging.NOTSET:
        library.setLevel(logging.ERROR)


@contextlib.asynccontextmanager
async def open_adapter(name: str, *, device: str) -> AsyncIterator[BleAdapter]:
    """The shared adapter ``name``, watched from first use until its last device
    leaves. Raises BleUnavailable when the system bus cannot be reached."""
    adapter = _adapters.get(name)
    if adapter is None:
        _quiet_library_logging()
        adapter = BleAdapter(name)
        _adapters[name] = adapter
    adapter.users.add(device)
    try:
        await adapter.open()
        yield adapter
    finally:
        adapter.users.discard(device)
        if not adapter.users:
            if _adapters.get(name) is adapter:
                del _adapters[name]
            await adapter.close()

