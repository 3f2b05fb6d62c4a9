"""A python-dbusmock template: bluetoothd as the ble driver sees it over D-Bus.

It loads the stock ``bluez5`` template (org.bluez, the object manager, adapters
with Adapter1 and AdvertisementMonitorManager1) and adds what that template
lacks, built the way bluetoothd builds it:

- LE devices "on the air" (``AddLeDevice``) that become ``Device1`` objects only
  when an advertisement is heard while the adapter scans (``Advertise``): the
  first one by ``InterfacesAdded``, later ones by ``PropertiesChanged`` of
  ``ServiceData``/``ManufacturerData`` (typed ``a{sv}``/``a{qv}`` as bluetoothd
  types them; the stock ``AddDevice`` gets ManufacturerData wrong for bleak);
- GATT services and characteristics exported on ``Connect`` (``InterfacesAdded``
  then ``ServicesResolved``) and removed on disconnect, with ``ReadValue``,
  ``WriteValue``, ``StartNotify``/``StopNotify`` and notifications as
  ``PropertiesChanged`` of ``Value``;
- faults: a device that refuses or never answers a connect, a link lost from
  the device's side, an adapter power cycle (bluetoothd drops every discovery
  session and every connection), a device leaving BlueZ's cache.

Test code drives it through the ``org.bluez.Mock`` methods below. This file is
loaded by ``python -m dbusmock --template PATH``: it runs inside the mock
process, not in the tests.
"""

# ruff: noqa: F403, F405

import ctypes

import dbus
import dbus.service
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
from dbusmock.templates.bluez5 import *  # the stock methods (AddAdapter, ...) stay available

GATT_SERVICE_IFACE = "org.bluez.GattService1"
GATT_CHAR_IFACE = "org.bluez.GattCharacteristic1"
ERROR_FAILED = "org.bluez.Error.Failed"
ERROR_NOT_READY = "org.bluez.Error.NotReady"

# device path -> the device as it is on the air (whether BlueZ shows it or not)
RADIO = {}
# adapter path -> number of discovery sessions (StartDiscovery minus StopDiscovery)
SESSIONS = {}


def load(mock, parameters):
    bluez5.load(mock, parameters)


# The mock's main loop is GLib's (driven through ctypes by dbusmock): a GLib
# timeout makes devices with an advertising interval advertise again and again.
_glib = ctypes.cdll.LoadLibrary("libglib-2.0.so.0")
_SOURCE_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
TICK_MS = 100


@_SOURCE_FUNC
def _tick(_data):
    for path, dev in list(RADIO.items()):
        interval = dev["interval_ms"]
        if not interval or dev["last_advert"] is None or not _scanning(dev["adapter"]):
            continue
        dev["since_ms"] += TICK_MS
        if dev["since_ms"] >= interval:
            dev["since_ms"] = 0
            _deliver(path, *dev["last_advert"])
    return 1  # G_SOURCE_CONTINUE


_glib.g_timeout_add(TICK_MS, _tick, None)


def _manager():
    return mockobject.objects["/"]


def _adapter(path):
    return mockobject.objects[path]


def _adapter_props(path):
    return _adapter(path).props[ADAPTER_IFACE]


def _scanning(adapter_path):
    adapter = _adapter(adapter_path)
    props = adapter.props[ADAPTER_IFACE]
    return bool(props["Powered"]) and (
        bool(props["Discovering"]) or bool(getattr(adapter, "monitors", []))
    )


def _emit_changed(obj, iface, changed, invalidated=()):
    obj.EmitSignal(dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as",
                   [iface, changed, dbus.Array(list(invalidated), signature="s")])


# ---- adapters: discovery sessions and power ---------------------------------------


def _set_discovering(adapter_path):
    adapter = _adapter(adapter_path)
    props = adapter.props[ADAPTER_IFACE]
    discovering = SESSIONS.get(adapter_path, 0) > 0
    if bool(props["Discovering"]) != discovering:
        props["Discovering"] = dbus.Boolean(discovering)
        _emit_changed(adapter, ADAPTER_IFACE, {"Discovering": dbus.Boolean(discovering)})


def StartDiscoveryCounted(adapter):
    if not adapter.props[ADAPTER_IFACE]["Powered"]:
        raise dbus.exceptions.DBusException("Resource Not Ready", name=ERROR_NOT_READY)
    SESSIONS[adapter.path] = SESSIONS.get(adapter.path, 0) + 1
    _set_discovering(adapter.path)
    # Devices that advertise are heard again as soon as a scan starts.
    for path, dev in RADIO.items():
        if dev["adapter"] == adapter.path and dev["last_advert"] is not None:
            _deliver(path, *dev["last_advert"])


def StopDiscoveryCounted(adapter):
    if SESSIONS.get(adapter.path, 0) <= 0:
        raise dbus.exceptions.DBusException("No discovery started", name=ERROR_FAILED)
    SESSIONS[adapter.path] -= 1
    _set_discovering(adapter.path)


def RegisterMonitorChecked(manager, monitor_path):
    if not manager.props[ADAPTER_IFACE]["Powered"]:
        raise dbus.exceptions.DBusException("Resource Not Ready", name=ERROR_NOT_READY)
    bluez5.RegisterMonitor(manager, monitor_path)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="ss", out_signature="s")
def AddLeAdapter(self, device_name, system_name):
    """An adapter whose discovery sessions are counted (bluetoothd keeps scanning
    while any client's session is open) and that refuses to scan while off."""
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = _adapter(path)
    methods = adapter.methods[ADAPTER_IFACE]
    for name, fn in (("StartDiscovery", StartDiscoveryCounted),
                     ("StopDiscovery", StopDiscoveryCounted)):
        in_sig, out_sig, _code, dbus_method = methods[name]
        methods[name] = (in_sig, out_sig, fn, dbus_method)
    monitor_methods = adapter.methods.get(ADVERTISEMENT_MONITOR_MANAGER_IFACE)
    if monitor_methods is not None:
        in_sig, out_sig, _code, dbus_method = monitor_methods["RegisterMonitor"]
        monitor_methods["RegisterMonitor"] = (in_sig, out_sig, RegisterMonitorChecked, dbus_method)
    SESSIONS[path] = 0
    return path


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="sb", out_signature="")
def SetPowered(self, device_name, powered):
    """Power the adapter off or on. Off drops every discovery session (clients must
    start discovery again after power on) and every connection, as bluetoothd does;
    registered advertisement monitors stay registered."""
    path = "/org/bluez/" + device_name
    adapter = _adapter(path)
    props = adapter.props[ADAPTER_IFACE]
    if not powered:
        for dev_path, dev in RADIO.items():
            if dev["adapter"] == path and dev["connected"]:
                _link_lost(dev_path)
        SESSIONS[path] = 0
        props["Discovering"] = dbus.Boolean(False)
    props["Powered"] = dbus.Boolean(powered)
    changed = {"Powered": dbus.Boolean(powered)}
    if not powered:
        changed["Discovering"] = dbus.Boolean(False)
    _emit_changed(adapter, ADAPTER_IFACE, changed)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="s", out_signature="a{sv}")
def AdapterState(self, device_name):
    """Powered, Discovering, open discovery sessions and registered monitors."""
    path = "/org/bluez/" + device_name
    adapter = _adapter(path)
    props = adapter.props[ADAPTER_IFACE]
    return {
        "Powered": dbus.Boolean(props["Powered"]),
        "Discovering": dbus.Boolean(props["Discovering"]),
        "Sessions": dbus.Int32(SESSIONS.get(path, 0)),
        "Monitors": dbus.Int32(len(getattr(adapter, "monitors", []))),
    }


# ---- devices on the air --------------------------------------------------------------


class LeDevice(mockobject.DBusMockObject):
    """A Device1 object whose Connect can be refused or left unanswered."""

    @dbus.service.method(DEVICE_IFACE, in_signature="", out_signature="",
                         async_callbacks=("reply", "error"))
    def Connect(self, reply, error):
        dev = RADIO[self.path]
        dev["connect_calls"] += 1
        if not _adapter_props(dev["adapter"])["Powered"]:
            error(dbus.exceptions.DBusException("Resource Not Ready", name=ERROR_NOT_READY))
            return
        if dev["connected"]:
            reply()
            return
        mode = dev["connect_mode"]
        if mode == "refuse":
            error(dbus.exceptions.DBusException("Connection refused", name=ERROR_FAILED))
            return
        if mode == "hang":
            dev["pending_connect"] = error
            return
        _connect(self.path)
        reply()

    @dbus.service.method(DEVICE_IFACE, in_signature="", out_signature="")
    def Disconnect(self):
        dev = RADIO[self.path]
        dev["disconnect_calls"] += 1
        pending = dev.pop("pending_connect", None)
        if pending is not None:
            pending(dbus.exceptions.DBusException("Operation canceled", name=ERROR_FAILED))
        if dev["connected"]:
            _link_lost(self.path)


def _device_props(dev):
    props = {
        "Address": dbus.String(dev["address"]),
        "AddressType": dbus.String("public"),
        "Alias": dbus.String(dev["name"] or dev["address"].replace(":", "-")),
        "Adapter": dbus.ObjectPath(dev["adapter"]),
        "Paired": dbus.Boolean(False),
        "Bonded": dbus.Boolean(False),
        "Trusted": dbus.Boolean(False),
        "Blocked": dbus.Boolean(False),
        "LegacyPairing": dbus.Boolean(False),
        "Connected": dbus.Boolean(dev["connected"]),
        "ServicesResolved": dbus.Boolean(False),
        "UUIDs": dbus.Array([], signature="s"),
    }
    if dev["name"]:
        props["Name"] = dbus.String(dev["name"])
    return props


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="sss", out_signature="o")
def AddLeDevice(self, adapter_name, address, name):
    """A device in range of the adapter. BlueZ shows it once it is heard."""
    adapter_path = "/org/bluez/" + adapter_name
    path = adapter_path + "/dev_" + address.upper().replace(":", "_")
    RADIO[path] = {
        "address": address.upper(), "name": name, "adapter": adapter_path,
        "on_bus": False, "connected": False, "connect_mode": "accept",
        "services": [], "next_handle": 0x000A, "last_advert": None,
        "connect_calls": 0, "disconnect_calls": 0, "interval_ms": 0, "since_ms": 0,
    }
    return dbus.ObjectPath(path)


def _deliver(path, rssi, service_data, manufacturer_data):
    dev = RADIO[path]
    changed = {"RSSI": dbus.Int16(rssi)}
    if service_data:
        changed["ServiceData"] = dbus.Dictionary(service_data, signature="sv")
    if manufacturer_data:
        changed["ManufacturerData"] = dbus.Dictionary(manufacturer_data, signature="qv")
    if not dev["on_bus"]:
        props = _device_props(dev)
        props.update(changed)
        _manager().AddObject(path, DEVICE_IFACE, props, [], mock_class=LeDevice)
        dev["on_bus"] = True
        _manager().EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                              [dbus.ObjectPath(path), {DEVICE_IFACE: props}])
        return
    obj = mockobject.objects[path]
    for key, value in changed.items():
        obj.props[DEVICE_IFACE][key] = value
    _emit_changed(obj, DEVICE_IFACE, changed)


def _variant_bytes(data):
    return dbus.Array([dbus.Byte(b) for b in bytes(data)], signature="y")


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="ona{sv}a{qv}", out_signature="b")
def Advertise(self, path, rssi, service_data, manufacturer_data):
    """The device sends one advertisement; returns whether BlueZ heard it (the
    adapter is on and scanning: a discovery session or a monitor is open)."""
    dev = RADIO[path]
    sd = {str(k): _variant_bytes(v) for k, v in service_data.items()}
    md = {dbus.UInt16(int(k)): _variant_bytes(v) for k, v in manufacturer_data.items()}
    dev["last_advert"] = (int(rssi), sd, md)
    if not _scanning(dev["adapter"]):
        return False
    _deliver(path, int(rssi), sd, md)
    return True


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="ou", out_signature="")
def SetAdvertisingInterval(self, path, interval_ms):
    """Repeat the device's last advertisement every ``interval_ms`` while the
    adapter scans (0: advertise only when ``Advertise`` is called)."""
    RADIO[path]["interval_ms"] = int(interval_ms)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="o", out_signature="")
def ForgetLeDevice(self, path):
    """BlueZ drops the device from its cache (InterfacesRemoved), as it does for a
    temporary device it has not heard for a while."""
    dev = RADIO[path]
    if dev["connected"]:
        _link_lost(path)
    dev["last_advert"] = None
    if dev["on_bus"]:
        _manager().RemoveObject(path)
        dev["on_bus"] = False
        _manager().EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas",
                              [dbus.ObjectPath(path), dbus.Array([DEVICE_IFACE], signature="s")])


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="os", out_signature="")
def SetConnectMode(self, path, mode):
    """``accept`` (default), ``refuse`` (Connect fails at once) or ``hang`` (Connect
    is never answered until the client calls Disconnect)."""
    RADIO[path]["connect_mode"] = str(mode)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="o", out_signature="a{sv}")
def DeviceState(self, path):
    dev = RADIO[path]
    return {
        "OnBus": dbus.Boolean(dev["on_bus"]),
        "Connected": dbus.Boolean(dev["connected"]),
        "ConnectCalls": dbus.Int32(dev["connect_calls"]),
        "DisconnectCalls": dbus.Int32(dev["disconnect_calls"]),
    }


# ---- GATT ------------------------------------------------------------------------------


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="ossasay", out_signature="o")
def AddGattCharacteristic(self, device_path, service_uuid, char_uuid, flags, value):
    """A characteristic the device serves (exported while connected)."""
    dev = RADIO[device_path]
    service = next((s for s in dev["services"] if s["uuid"] == service_uuid), None)
    if service is None:
        service = {"uuid": str(service_uuid), "handle": dev["next_handle"], "chars": []}
        dev["next_handle"] += 1
        dev["services"].append(service)
    handle = dev["next_handle"]
    dev["next_handle"] += 2  # the value handle and its CCC descriptor
    spath = f"{device_path}/service{service['handle']:04x}"
    char = {"uuid": str(char_uuid), "handle": handle, "flags": [str(f) for f in flags],
            "value": bytes(value), "path": f"{spath}/char{handle:04x}", "writes": [],
            "notifying": False, "reads": 0}
    service["chars"].append(char)
    return dbus.ObjectPath(char["path"])


def _char(path):
    for dev in RADIO.values():
        for service in dev["services"]:
            for char in service["chars"]:
                if char["path"] == path:
                    return dev, char
    raise KeyError(path)


def _gatt_error(message):
    return dbus.exceptions.DBusException(message, name=ERROR_FAILED)


def _read_value(obj, _options):
    dev, char = _char(obj.path)
    if not dev["connected"]:
        raise _gatt_error("Not connected")
    char["reads"] += 1
    value = _variant_bytes(char["value"])
    obj.props[GATT_CHAR_IFACE]["Value"] = value
    _emit_changed(obj, GATT_CHAR_IFACE, {"Value": value})  # bluetoothd does this too
    return value


def _write_value(obj, value, _options):
    dev, char = _char(obj.path)
    if not dev["connected"]:
        raise _gatt_error("Not connected")
    if "write" not in char["flags"] and "write-without-response" not in char["flags"]:
        raise dbus.exceptions.DBusException("Write not permitted",
                                            name="org.bluez.Error.NotPermitted")
    char["writes"].append(bytes(value))
    char["value"] = bytes(value)


def _start_notify(obj):
    _dev, char = _char(obj.path)
    char["notifying"] = True
    obj.props[GATT_CHAR_IFACE]["Notifying"] = dbus.Boolean(True)
    _emit_changed(obj, GATT_CHAR_IFACE, {"Notifying": dbus.Boolean(True)})


def _stop_notify(obj):
    _dev, char = _char(obj.path)
    char["notifying"] = False
    obj.props[GATT_CHAR_IFACE]["Notifying"] = dbus.Boolean(False)
    _emit_changed(obj, GATT_CHAR_IFACE, {"Notifying": dbus.Boolean(False)})


def _connect(path):
    dev = RADIO[path]
    dev["connected"] = True
    obj = mockobject.objects[path]
    obj.props[DEVICE_IFACE]["Connected"] = dbus.Boolean(True)
    _emit_changed(obj, DEVICE_IFACE, {"Connected": dbus.Boolean(True)})
    manager = _manager()
    for service in dev["services"]:
        spath = f"{path}/service{service['handle']:04x}"
        sprops = {"UUID": dbus.String(service["uuid"]), "Device": dbus.ObjectPath(path),
                  "Primary": dbus.Boolean(True), "Handle": dbus.UInt16(service["handle"]),
                  "Includes": dbus.Array([], signature="o")}
        manager.AddObject(spath, GATT_SERVICE_IFACE, sprops, [])
        manager.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                           [dbus.ObjectPath(spath), {GATT_SERVICE_IFACE: sprops}])
        for char in service["chars"]:
            char["notifying"] = False
            cprops = {"UUID": dbus.String(char["uuid"]), "Service": dbus.ObjectPath(spath),
                      "Value": _variant_bytes(char["value"]),
                      "Flags": dbus.Array(char["flags"], signature="s"),
                      "Notifying": dbus.Boolean(False), "Handle": dbus.UInt16(char["handle"]),
                      "MTU": dbus.UInt16(247)}
            manager.AddObject(char["path"], GATT_CHAR_IFACE, cprops, [
                ("ReadValue", "a{sv}", "ay", _read_value),
                ("WriteValue", "aya{sv}", "", _write_value),
                ("StartNotify", "", "", _start_notify),
                ("StopNotify", "", "", _stop_notify),
            ])
            manager.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                               [dbus.ObjectPath(char["path"]), {GATT_CHAR_IFACE: cprops}])
    obj.props[DEVICE_IFACE]["ServicesResolved"] = dbus.Boolean(True)
    _emit_changed(obj, DEVICE_IFACE, {"ServicesResolved": dbus.Boolean(True)})


def _link_lost(path):
    dev = RADIO[path]
    dev["connected"] = False
    manager = _manager()
    for service in dev["services"]:
        for char in service["chars"]:
            char["notifying"] = False
            if char["path"] in mockobject.objects:
                manager.RemoveObject(char["path"])
                manager.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas", [
                    dbus.ObjectPath(char["path"]), dbus.Array([GATT_CHAR_IFACE], signature="s")])
        spath = f"{path}/service{service['handle']:04x}"
        if spath in mockobject.objects:
            manager.RemoveObject(spath)
            manager.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas", [
                dbus.ObjectPath(spath), dbus.Array([GATT_SERVICE_IFACE], signature="s")])
    if path in mockobject.objects:
        obj = mockobject.objects[path]
        obj.props[DEVICE_IFACE]["ServicesResolved"] = dbus.Boolean(False)
        obj.props[DEVICE_IFACE]["Connected"] = dbus.Boolean(False)
        _emit_changed(obj, DEVICE_IFACE, {"ServicesResolved": dbus.Boolean(False),
                                          "Connected": dbus.Boolean(False)})


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="o", out_signature="")
def DropConnection(self, path):
    """The link is lost from the device's side (out of range, battery pulled)."""
    if RADIO[path]["connected"]:
        _link_lost(path)


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="oay", out_signature="b")
def Notify(self, char_path, value):
    """The device changes a characteristic's value; returns whether a notification
    went out (the client subscribed)."""
    dev, char = _char(char_path)
    char["value"] = bytes(value)
    if not (dev["connected"] and char["notifying"]):
        return False
    obj = mockobject.objects[char_path]
    data = _variant_bytes(value)
    obj.props[GATT_CHAR_IFACE]["Value"] = data
    _emit_changed(obj, GATT_CHAR_IFACE, {"Value": data})
    return True


@dbus.service.method(BLUEZ_MOCK_IFACE, in_signature="o", out_signature="a{sv}")
def CharacteristicState(self, char_path):
    _dev, char = _char(char_path)
    return {
        "Notifying": dbus.Boolean(char["notifying"]),
        "Reads": dbus.Int32(char["reads"]),
        "Writes": dbus.Array([_variant_bytes(w) for w in char["writes"]], signature="ay"),
    }
