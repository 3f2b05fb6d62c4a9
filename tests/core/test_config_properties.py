"""Property tests of config loading: any TOML text gives a Config or a ConfigError.

Documents are valid configurations (one table per section and per driver, from the
documentation's examples) mutated key by key: values replaced by other types, by
near-misses of the expected forms or by extremes, keys dropped, unknown keys
added, tables split over a drop-in. Raw text and raw bytes cover the TOML layer.
Whatever comes in, ``load_config`` returns a Config or raises ConfigError whose
every problem names a file; no other exception escapes.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config import Config, load_config
from gatewayd.errors import ConfigError
from tests.support.properties import examples

ROOT = Path(__file__).resolve().parents[2]

# Every key some part of the configuration reads, found in the source: the vocabulary
# of added keys grows with the schema.
_SOURCES = [*ROOT.joinpath("gatewayd").rglob("*.py"), *ROOT.joinpath("drivers").rglob("*.py")]
KEYS = sorted({key for path in _SOURCES for key in re.findall(
    r'\.(?:get|table|table_list|has|mark_used)\("([A-Za-z0-9_]+)"', path.read_text())})

SEED: dict[str, Any] = {
    "gateway": {"id": "gw-0001", "state_dir": "/nonexistent/state",
                "runtime_dir": "/nonexistent/run"},
    "buffer": {"max_size": "256MiB", "commit_interval": "200ms", "durability": "batched"},
    "logging": {"level": "info", "status_interval": "5s"},
    "control": {"metrics_listen": "127.0.0.1:9108"},
    "identity": {"expiry_warning_days": 30},
    "commands": {"trusted_keys_dir": "/nonexistent/trusted", "max_lifetime": "5m",
                 "rate_limit": {"count": 60, "per": "1m"}},
    "devices": {
        "demo": {"driver": "sim", "poll": "1s", "points": [
            {"name": "temp", "signal": "sine", "min": 18.0, "max": 24.0, "period": "60s",
             "unit": "Cel"},
            {"name": "count", "signal": "counter"}]},
        "boiler": {"driver": "modbus", "url": "rtu:///dev/ttyUSB0?baudrate=9600&parity=E",
                   "unit_id": 3, "poll": "5s", "points": [
                       {"name": "flow_temp", "address": "hr:100", "type": "float32",
                        "order": "CDAB", "unit": "Cel"},
                       {"name": "pressure", "address": "ir:7", "type": "uint16",
                        "scale": 0.01, "unit": "bar"},
                       {"name": "pump_on", "address": "hr:300.2", "type": "bool"},
                       {"name": "setpoint", "address": "hr:200", "type": "int16",
                        "writable": {"min": 20, "max": 80}}]},
        "plc": {"driver": "modbus", "url": "tcp://127.0.0.1:502", "points": [
            {"name": "name", "address": "hr:10", "type": "string(8)"}]},
        "gps": {"driver": "serial", "port": "/dev/ttyUSB1", "baudrate": 9600,
                "protocol": "nmea", "points": ["latitude", "longitude"]},
        "scale": {"driver": "serial", "port": "/dev/ttyUSB2", "protocol": "lines",
                  "terminator": "\r\n", "parser": "regex",
                  "pattern": r"(?P<status>ST|US),GS,(?P<weight>[+-]\d+\.\d+)\s*kg",
                  "fields": [{"name": "weight", "unit": "kg"},
                             {"name": "stable", "group": "status", "type": "string"}],
                  "poll": "2s", "query": "S\\r\\n", "timeout": "500ms"},
        "meter": {"driver": "serial", "port": "/dev/ttyAMA0", "baudrate": 19200,
                  "parity": "even", "protocol": "frames",
                  "frame": {"start": "AA 55", "length": {"at": 2, "size": 1,
                                                         "counts": "payload"},
                            "checksum": {"kind": "crc16-modbus", "from": 2}},
                  "fields": [{"name": "power", "at": 3, "type": "int32", "unit": "W"},
                             {"name": "voltage", "at": 7, "type": "uint16", "scale": 0.1}]},
        "csv": {"driver": "serial", "port": "/dev/ttyS0", "protocol": "lines",
                "parser": "csv", "delimiter": ";", "fields": [{"name": "a", "column": 0}]},
        "room": {"driver": "ble", "address": "54:48:E6:8F:80:A5", "format": "bthome"},
        "fridge": {"driver": "ble", "address": "A4:C1:38:11:22:33", "format": "gatt",
                   "poll": "30s", "characteristics": [
                       {"uuid": "ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6", "name": "temperature",
                        "struct": "<h", "scale": 0.01, "unit": "Cel", "notify": True},
                       {"uuid": "2a19", "name": "battery", "struct": "<B", "unit": "%"},
                       {"uuid": "ebe0ccd8-7a0a-4b0c-8a1a-6ff2997da3a6", "name": "interval",
                        "struct": "<B", "writable": {"min": 1, "max": 60}}]},
        "nearby": {"driver": "ble", "discovery": True},
    },
    "uplinks": {
        "cloud": {"url": "mqtts://broker.example.net:8883", "topic_prefix": "gateways/gw-0001",
                  "auth": {"type": "mtls"}, "select": ["boiler/*", "demo/*"],
                  "commands": True, "max_delay": "1s"},
        "backup": {"url": "wss://relay.example.net/mqtt", "auth": {
            "type": "password", "username": "gw", "password_file": "/nonexistent/pw"}},
    },
    "tunnel": {"host": "bastion.example.net", "port": 22, "user": "gw-0001",
               "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9"
                           "/cu7/QEXn9OIeZJ",
               "forwards": [{"remote": "127.0.0.1:22001", "local": "127.0.0.1:22"}],
               "mode": "on-demand"},
    "local": {"token_max_age": "1h"},
}

# Other forms of some sections (the documents use one of them).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "tunnel": [SEED["tunnel"], {**SEED["tunnel"], "transport": "websocket",
                                "url": "wss://relay.example.net/ssh", "mode": "always",
                                "ca_file": "/nonexistent/ca.pem"}],
    "local": [SEED["local"], {"clients_file": "/nonexistent/clients.toml",
                              "signed_lifespan": "60s", "max_payload": "64KiB",
                              "mqtt": {"listen": ["127.0.0.1:1883"],
                                       "tls_listen": ["127.0.0.1:8883"],
                                       "tls_cert_file": "/nonexistent/c.pem",
                                       "tls_key_file": "/nonexistent/k.pem"},
                              "coap": {"listen": ["127.0.0.1:5683"]}}],
}

# Near-misses and extremes of the forms the schema expects.
TRICKY_STRINGS = [
    "", " ", "0", "-1", "1e3", "nan", "inf", "9" * 400, "0x10", "true",
    "500ms", "0ms", "-5s", "1m30s", "5 s", "1.5h", "9" * 400 + "s", "9" * 400 + "d",
    "256MiB", "0B", "1.5GiB", "9" * 400 + "GiB", "12", "-1MiB",
    "tcp://127.0.0.1:502", "tcp://[::1]:99999", "tcp://:0", "rtu+tcp://h", "rtu://",
    "rtu:///dev/x?baudrate=0&parity=Q", "rtu:///dev/x?stopbits=3&bytesize=9&bogus=1",
    "mqtt://", "mqtts://h:0", "ws://h:70000/x", "http://x", "mqtts://u:p@h", "wss://[zz]/",
    "wss://[::1/ssh", "tcp://[zz]:1", "coap://[zz]", "rtu://[zz]/dev/x",
    "hr:100", "hr:65535", "hr:65536", "hr:99999999999999999999", "hr:1.16", "hr:1.-1", "xx:1",
    "co:1.2", "hr:", ":", "uint16", "string(0)", "string(251)", "string(99999999999999999)",
    "flaot32", "bool", "ABCD", "DCBA", "XYZW",
    "(?P<a>", "[", "(?P<a>x)(?P<a>y)", "(?P<weight>\\d+)", ".*", "\\",
    "<h", "<2xB", "<999999999999h", "x", "utf8", "bytes", "<q", "?", "%",
    "AA 55", "zz", "0xAA 0x", "AA" * 200, "\\x", "\\xZZ", "\\r\\n", "\\e\\0", "é",
    "A4:C1:38:11:22:33", "ZZ:ZZ", "2a19", "0x2A19", "ebe0ccc1-7a0a-4b0c-8a1a-6ff2997da3a6",
    "127.0.0.1:22", "[::1]:22001", "host:", ":80", "[::1", "0.0.0.0:9108",
    "ssh-ed25519 AAAA", "@cert-authority x", "/dev/null", "/nonexistent", "*", "**/[",
    "gw/0001", "a.b", "-", "_",
]
# Durations and sizes: a number (tiny, huge, negative, malformed) and a unit.
quantities = st.builds(
    lambda number, space, unit: number + space + unit,
    st.sampled_from(["0", "1", "1.5", "-1", "9" * 400, "1" + "0" * 30, "0.0000001", "00", ".5",
                     "1.", "1e3", ""]),
    st.sampled_from(["", " "]),
    st.sampled_from(["ms", "s", "m", "h", "d", "B", "KB", "KiB", "MiB", "GiB", "", "x", "s5"]))
NAMES = st.sampled_from(["demo", "boiler", "x", "a.b", "bad/name", "", "-", "gw-0001", "é"])

scalars = st.one_of(
    st.sampled_from(TRICKY_STRINGS),
    st.text(max_size=24),
    st.integers(-2**63, 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 65535, 65536, 2**31, 2**53 + 1, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any, rate: int = 8) -> Any:
    """``value`` with about ``rate`` percent of its keys, items and leaves replaced,
    dropped or added: mostly valid, so that the checks after the first one run too."""
    def hit() -> bool:
        return draw(st.integers(0, 99)) >= 100 - rate  # shrinks towards no change

    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if hit():
                action = draw(st.sampled_from(["replace", "drop", "rename"]))
                if action == "replace":
                    out[key] = draw(st.one_of(scalars, scalars, values))
                elif action == "rename":
                    out[draw(st.sampled_from(KEYS))] = item
                continue
            out[key] = draw(mutated(item, rate))
        if hit():
            out.setdefault(draw(st.sampled_from(KEYS)), draw(st.one_of(scalars, values)))
        return out
    if isinstance(value, list):
        items = [draw(mutated(item, rate)) for item in value]
        if items and hit():
            del items[draw(st.integers(0, len(items) - 1))]
        if hit():
            items.append(draw(st.one_of(scalars, values)))
        return items
    if not hit():
        return value
    if isinstance(value, str):
        return draw(st.one_of(quantities, st.sampled_from(TRICKY_STRINGS), scalars))
    return draw(scalars)


RATES = st.sampled_from([0, 2, 5, 10, 25])


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A subset of the seed's sections and devices, mutated."""
    doc: dict[str, Any] = {}
    for section, table in SEED.items():
        if section != "gateway" and not draw(st.booleans()):
            continue
        if section in ("devices", "uplinks"):
            chosen = draw(st.lists(st.sampled_from(sorted(table)), max_size=3, unique=True))
            entries = {name: table[name] for name in chosen}
            if draw(st.integers(0, 5)) == 5:
                entries[draw(NAMES)] = draw(values)
            doc[section] = draw(mutated(entries, draw(RATES)))
        else:
            table = draw(st.sampled_from(VARIANTS.get(section, [table])))
            doc[section] = draw(mutated(table, draw(RATES)))
    if draw(st.integers(0, 9)) == 9:
        doc[draw(st.sampled_from(KEYS))] = draw(values)
    return doc


# ---- a TOML writer for the generated documents -------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    """Top-level tables as ``[name]`` (devices and uplinks as ``[devices.NAME]``),
    everything below them inline."""
    lines: list[str] = []
    for key, value in doc.items():
        if not isinstance(value, dict):
            lines.insert(0, f"{_key(key)} = {_value(value)}")
            continue
        nested = key in ("devices", "uplinks") and all(isinstance(v, dict)
                                                       for v in value.values())
        if nested:
            for name, table in value.items():
                lines.append(f"[{_key(key)}.{_key(name)}]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        else:
            lines.append(f"[{_key(key)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


# ---- the properties ---------------------------------------------------------------

@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gwcfg-") as d:
        yield Path(d)


def load(folder: Path, main: bytes, dropin: bytes | None = None) -> Config | None:
    """Load ``main`` (and one drop-in); None for a ConfigError, after checking it."""
    path = folder / "gatewayd.toml"
    path.write_bytes(main)
    dropins = folder / "conf.d"
    dropins.mkdir(exist_ok=True)
    for old in dropins.iterdir():
        old.unlink()
    if dropin is not None:
        (dropins / "50-more.toml").write_bytes(dropin)
    try:
        config = load_config(path, env={})
    except ConfigError as err:
        assert err.problems
        for problem in err.problems:
            assert problem.file and problem.message, problem
        assert str(err)
        return None
    assert isinstance(config, Config)
    return config


def test_the_seed_itself_is_valid(folder: Path) -> None:
    config = load(folder, to_toml(SEED).encode())
    assert config is not None and len(config.devices) == len(SEED["devices"])


@pytest.mark.property
@settings(max_examples=examples(200))
@given(documents())
def test_mutated_documents_give_a_config_or_a_config_error(folder: Path,
                                                           doc: dict[str, Any]) -> None:
    load(folder, to_toml(doc).encode())


@pytest.mark.property
@settings(max_examples=examples(50))
@given(documents(), documents())
def test_a_drop_in_over_a_main_file_gives_a_config_or_a_config_error(
        folder: Path, main: dict[str, Any], more: dict[str, Any]) -> None:
    load(folder, to_toml(main).encode(), to_toml(more).encode())


toml_lines = st.one_of(
    st.sampled_from(["[gateway]", 'id = "gw"', "[devices.d]", 'driver = "sim"', "[[x]]",
                     "points = [", "]", "a = {", "}", 'x = """', "[devices]", "= 1", "a.b = 1",
                     "[buffer]", 'max_size = "1MiB"', "[gateway.id]", "id = 1979-05-27",
                     "t = 07:32:00", "n = nan", "k = 0x_1", "k = 1__0", "\ufeff"]),
    st.text(max_size=30),
)


@pytest.mark.property
@settings(max_examples=examples(200))
@given(st.lists(toml_lines, max_size=12))
def test_arbitrary_toml_text_gives_a_config_or_a_config_error(folder: Path,
                                                              lines: list[str]) -> None:
    load(folder, "\n".join(lines).encode("utf-8", "surrogatepass"))


@pytest.mark.property
@settings(max_examples=examples(100))
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_config_error(folder: Path, data: bytes) -> None:
    load(folder, b'[gateway]\nid = "gw"\n' + data)
