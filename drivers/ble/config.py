"""The ble driver's options: one advertising sensor, one GATT device, or discovery.

:func:`parse_options` reads one ``[devices.NAME]`` table into frozen dataclasses,
recording every problem on the Section (it never raises). Defaults live here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.section import (
    Section,
    boolean,
    choice,
    duration,
    integer,
    nonempty_string,
    number,
    string,
)
from gatewayd.driver import Writable, parse_writable

from .gatt import TEXT_LAYOUTS, Layout, check_layout
from .packet import format_mac, parse_mac

FORMATS = ("bthome", "ruuvi", "pvvx", "gatt")
ADVERT_FORMATS = ("bthome", "ruuvi", "pvvx")
SCAN_MODES = ("auto", "passive", "active")

DEFAULT_ADAPTER = "hci0"
DEFAULT_DUPLICATE_WINDOW = 60.0
DEFAULT_POLL = 30.0
DEFAULT_CONNECT_TIMEOUT = 20.0
DEFAULT_RECONNECT_DELAY = 1.0
DEFAULT_RECONNECT_DELAY_MAX = 60.0
DEFAULT_RESCAN_DELAY = 1.0
DEFAULT_RESCAN_DELAY_MAX = 30.0
DEFAULT_MAX_DISCOVERED = 256

_ADAPTER = re.compile(r"hci[0-9]{1,3}")
_POINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BASE_UUID = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class Characteristic:
    """One GATT characteristic mapped to one point."""

    uuid: str  # full 128-bit, lower case
    name: str
    layout: Layout
    unit: str | None
    notify: bool
    writable: Writable | None


@dataclass(frozen=True)
class BleOptions:
    address: str | None  # upper case, colon separated; None in discovery mode
    format: str | None  # bthome | ruuvi | pvvx | gatt; None in discovery mode
    adapter: str
    scan_mode: str  # auto | passive | active
    discovery: bool
    max_discovered: int
    bindkey_file: Path | None
    duplicate_window: float
    rescan_delay: float
    rescan_delay_max: float
    poll: float
    connect_timeout: float
    reconnect_delay: float
    reconnect_delay_max: float
    characteristics: tuple[Characteristic, ...] = ()

    @property
    def mac(self) -> bytes | None:
        return parse_mac(self.address) if self.address else None

    def characteristic(self, name: str) -> Characteristic | None:
        for c in self.characteristics:
            if c.name == name:
                return c
        return None


def normalize_uuid(text: str) -> str:
    """``"2a6e"``, ``"0x2A6E"``, ``"00002a6e"`` or a full UUID as the full lower-case
    128-bit UUID. Raises ValueError."""
    t = text.strip().lower()
    if t.startswith("0x"):
        t = t[2:]
    if re.fullmatch(r"[0-9a-f]{4}", t):
        return f"0000{t}{BASE_UUID}"
    if re.fullmatch(r"[0-9a-f]{8}", t):
        return f"{t}{BASE_UUID}"
    if _UUID.fullmatch(t):
        return t
    raise ValueError(f"invalid UUID {text!r}; expected a 16-bit UUID such as '2a6e' or a full "
                     "UUID such as 'ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6'")


def _mac(value: object) -> str:
    return format_mac(parse_mac(nonempty_string(value)))


def _adapter(value: object) -> str:
    text = nonempty_string(value)
    if not _ADAPTER.fullmatch(text):
        raise ValueError(f"invalid adapter {text!r}; expected a BlueZ adapter name such as "
                         "'hci0'")
    return text


def _uuid(value: object) -> str:
    return normalize_uuid(string(value))


def _layout(value: object) -> str:
    return check_layout(nonempty_string(value))


def parse_options(s: Section) -> BleOptions:
    """Read a ble device table; every problem is recorded on ``s``."""
    discovery = s.get("discovery", boolean, False)
    if discovery:
        for key in ("address", "format", "bindkey_file", "characteristics"):
            if s.has(key):
                s.error(key, "not allowed with discovery = true (discovery lists the devices "
                        "that no other ble device of this adapter names)")
                s.mark_used(key)
        address = fmt = None
    else:
        address = s.get("address", _mac)
        fmt = s.get("format", choice(*FORMATS))
    adapter = s.get("adapter", _adapter, DEFAULT_ADAPTER)
    scan_mode = s.get("scan_mode", choice(*SCAN_MODES), "auto")
    max_discovered = s.get("max_discovered", integer(1, 10_000), DEFAULT_MAX_DISCOVERED)
    if s.has("max_discovered") and not discovery:
        s.error("max_discovered", "applies with discovery = true only")
    bindkey = s.get("bindkey_file", nonempty_string, None)
    if bindkey is not None and fmt != "bthome":
        s.error("bindkey_file", "applies to format = \"bthome\" only")
    duplicate_window = s.get("duplicate_window", duration(lo=0.0), DEFAULT_DUPLICATE_WINDOW)
    rescan_delay = s.get("rescan_delay", duration(lo=0.01), DEFAULT_RESCAN_DELAY)
    rescan_delay_max = s.get("rescan_delay_max", duration(lo=0.01), DEFAULT_RESCAN_DELAY_MAX)
    if rescan_delay_max < rescan_delay:
        s.error("rescan_delay_max", f"expected at least rescan_delay ({rescan_delay:g}s), "
                f"got {rescan_delay_max:g}s")

    gatt_keys = ("poll", "connect_timeout", "reconnect_delay", "reconnect_delay_max",
                 "characteristics")
    if fmt != "gatt":
        for key in gatt_keys:
            if s.has(key) and not (discovery and key == "characteristics"):
                s.error(key, "applies to format = \"gatt\" only")
                s.mark_used(key)
    poll = s.get("poll", duration(lo=0.1), DEFAULT_POLL)
    connect_timeout = s.get("connect_timeout", duration(lo=1.0), DEFAULT_CONNECT_TIMEOUT)
    reconnect_delay = s.get("reconnect_delay", duration(lo=0.01), DEFAULT_RECONNECT_DELAY)
    reconnect_delay_max = s.get("reconnect_delay_max", duration(lo=0.01),
                                DEFAULT_RECONNECT_DELAY_MAX)
    if reconnect_delay_max < reconnect_delay:
        s.error("reconnect_delay_max", f"expected at least reconnect_delay "
                f"({reconnect_delay:g}s), got {reconnect_delay_max:g}s")
    characteristics: tuple[Characteristic, ...] = ()
    if fmt == "gatt":
        characteristics = _parse_characteristics(s)
    return BleOptions(
        address=address, format=fmt, adapter=adapter, scan_mode=scan_mode, discovery=discovery,
        max_discovered=max_discovered,
        bindkey_file=Path(bindkey) if bindkey else None,
        duplicate_window=duplicate_window, rescan_delay=rescan_delay,
        rescan_delay_max=rescan_delay_max, poll=poll, connect_timeout=connect_timeout,
        reconnect_delay=reconnect_delay, reconnect_delay_max=reconnect_delay_max,
        characteristics=characteristics,
    )


def _parse_characteristics(s: Section) -> tuple[Characteristic, ...]:
    sections = s.table_list("characteristics", required=True)
    if s.has("characteristics") and not sections:
        s.error("characteristics", "expected at least one characteristic")
    out: list[Characteristic] = []
    names: set[str] = set()
    for cs in sections:
        char = _parse_characteristic(cs)
        cs.done()
        if char is None:
            continue
        if char.name in names:
            cs.error("name", f"duplicate point name {char.name!r}")
        names.add(char.name)
        out.append(char)
    return tuple(out)


def _parse_characteristic(cs: Section) -> Characteristic | None:
    uuid = cs.get("uuid", _uuid)
    name = cs.get("name", nonempty_string)
    if name and not _POINT_NAME.fullmatch(name):
        cs.error("name", f"invalid point name {name!r}; expected letters, digits, '_', '-' "
                 "or '.'")
    layout_text = cs.get("struct", _layout, "<h")
    scale = cs.get("scale", number, 1.0)
    offset = cs.get("offset", number, 0.0)
    unit = cs.get("unit", nonempty_string, None)
    notify = cs.get("notify", boolean, False)
    raw_writable = cs.get("writable", lambda v: v, None)
    if uuid is None or name is None or layout_text is None:
        return None
    layout = Layout(layout_text, scale, offset)
    if scale == 0.0:
        cs.error("scale", "expected a non-zero number")
    if not layout.is_numeric:
        for key in ("scale", "offset"):
            if cs.has(key):
                cs.error(key, f"{key} applies to numeric layouts only, not {layout_text!r}")
    writable = _parse_writable(cs, raw_writable, layout)
    return Characteristic(uuid=uuid, name=name, layout=layout, unit=unit, notify=notify,
                          writable=writable)


def _parse_writable(cs: Section, raw: object, layout: Layout) -> Writable | None:
    if raw is None or raw is False:
        return None
    if layout.text not in TEXT_LAYOUTS and "x" in layout.text:
        cs.error("writable", f"layout {layout.text!r} skips bytes: a write would overwrite "
                 "them; declare the whole value")
        return None
    return parse_writable(cs, raw, numeric=layout.is_numeric)
