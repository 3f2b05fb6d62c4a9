"""A private D-Bus system bus with a mocked bluetoothd on it, for the ble driver.

There is no radio here, so the BLE peer is bluetoothd's D-Bus API as served by
python-dbusmock (the ``bluez5`` template, extended in ``bluez_template.py``) on
a ``dbus-daemon`` of the test's own. bleak's real BlueZ backend talks to it
exactly as it talks to bluetoothd: the code under test reaches it through
``DBUS_SYSTEM_BUS_ADDRESS``.

The test side drives the mock with dbus-python (blocking calls; the mock never
calls back into the test process, so a call made from the event loop's thread
cannot deadlock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dbus

TEMPLATE = Path(__file__).with_name("bluez_template.py")

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.02)


class PrivateBus:
    """``dbus-daemon`` on a Unix socket in a temporary directory."""

    def __init__(self) -> None:
        # Unix socket paths are limited to 107 bytes: keep it short.
        self.dir = Path(tempfile.mkdtemp(prefix="gwbus-"))
        self.socket = self.dir / "bus"
        self.address = f"unix:path={self.socket}"
        config = self.dir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=self.socket))
        self.proc = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile",
                                      f"--config-file={config}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(self.socket.exists, 10.0, "dbus-daemon did not listen")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class BluezMock:
    """bluetoothd (mocked) on a private system bus; ``mock`` is its control API."""

    def __init__(self, *, monitor_api: bool = True) -> None:
        self.bus = PrivateBus()
        self.monitor_api = monitor_api
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": self.bus.address}
        self.log_path = self.bus.dir / "bluetoothd-mock.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn = dbus.bus.BusConnection(self.bus.address)
        self.start()

    # ---- the mocked bluetoothd process --------------------------------------------

    def start(self) -> None:
        env = dict(os.environ, **self.env)
        params = '{"enable_monitor_api": %s}' % ("true" if self.monitor_api else "false")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dbusmock", "--system", "--template", str(TEMPLATE),
                 "--parameters", params],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: bool(self._conn.name_has_owner("org.bluez")), 15.0,
              "the mocked bluetoothd did not appear on the bus")
        self.mock = dbus.Interface(self._conn.get_object("org.bluez", "/"), "org.bluez.Mock")

    def kill(self) -> None:
        """bluetoothd dies: its name and every object leave the bus at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        _wait(lambda: not self._conn.name_has_owner("org.bluez"), 10.0,
              "org.bluez still owned")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._conn.close()
        self.bus.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- convenience wrappers ----------------------------------------------------------

    def add_adapter(self, name: str = "hci0") -> str:
        return str(self.mock.AddLeAdapter(name, "gateway"))

    def add_device(self, address: str, name: str = "", adapter: str = "hci0") -> str:
        return str(self.mock.AddLeDevice(adapter, address, name))

    def advertise(self, device: str, *, service_data: dict[str, bytes] | None = None,
                  manufacturer_data: dict[int, bytes] | None = None, rssi: int = -60) -> bool:
        sd = dbus.Dictionary({k: dbus.ByteArray(v) for k, v in (service_data or {}).items()},
                             signature="sv")
        md = dbus.Dictionary({dbus.UInt16(k): dbus.ByteArray(v)
                              for k, v in (manufacturer_data or {}).items()}, signature="qv")
        return bool(self.mock.Advertise(dbus.ObjectPath(device), dbus.Int16(rssi), sd, md))

    def add_characteristic(self, device: str, service_uuid: str, char_uuid: str,
                           flags: list[str], value: bytes) -> str:
        return str(self.mock.AddGattCharacteristic(dbus.ObjectPath(device), service_uuid,
                                                   char_uuid, flags, dbus.ByteArray(value)))

    def notify(self, char: str, value: bytes) -> bool:
        return bool(self.mock.Notify(dbus.ObjectPath(char), dbus.ByteArray(value)))

    def adapter_state(self, name: str = "hci0") -> dict[str, Any]:
        return {str(k): _plain(v) for k, v in self.mock.AdapterState(name).items()}

    def device_state(self, device: str) -> dict[str, Any]:
        raw = self.mock.DeviceState(dbus.ObjectPath(device))
        return {str(k): _plain(v) for k, v in raw.items()}

    def characteristic_state(self, char: str) -> dict[str, Any]:
        raw = self.mock.CharacteristicState(dbus.ObjectPath(char))
        return {str(k): _plain(v) for k, v in raw.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Int16, dbus.Int32, dbus.UInt16, dbus.UInt32, dbus.Byte)):
        return int(value)
    if isinstance(value, dbus.Array):
        if value.signature == "y":
            return bytes(value)
        return [_plain(v) for v in value]
    return value
