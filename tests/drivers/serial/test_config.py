"""The serial driver's config: defaults, every key into frozen dataclasses, named problems."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from gatewayd.drivers.serial.config import (
    LineSettings,
    NmeaSettings,
    ParserSettings,
    PollSettings,
    PortSettings,
    ReopenSettings,
    SerialOptions,
    hex_bytes,
    unescape,
)
from gatewayd.drivers.serial.framing import ChecksumSpec, FrameSpec, LengthField
from gatewayd.drivers.serial.parsers import FieldSpec

from gatewayd.config import load_config
from gatewayd.errors import ConfigError

from .support import options, parse_table

P = "gatewayd.toml: devices.gps."


def problems(table: dict[str, Any]) -> list[str]:
    return parse_table(table)[1]


def test_nmea_defaults() -> None:
    opts = options({"port": "/dev/ttyACM0", "protocol": "nmea"})
    assert opts == SerialOptions(
        port=PortSettings(path="/dev/ttyACM0", baudrate=9600, bytesize=8, parity="N",
                          stopbits=1.0, flow_control="none", exclusive=True),
        protocol="nmea",
        lines=LineSettings(terminator=b"\n", max_line=256, encoding="ascii"),
        nmea=NmeaSettings(),
        reopen=ReopenSettings(delay=0.5, max_delay=30.0),
    )
    assert opts.port.line == "9600 8N1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.port.baudrate = 4800  # type: ignore[misc]


def test_polled_regex_instrument() -> None:
    opts = options({
        "port": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0",
        "baudrate": 2400, "bytesize": 7, "parity": "even", "stopbits": 2,
        "flow_control": "xonxoff", "exclusive": False,
        "protocol": "lines", "terminator": "\\r\\n", "max_line": 64, "encoding": "latin-1",
        "parser": "regex", "pattern": r"(?P<status>ST|US),GS,(?P<w>[+-][\d.]+)kg",
        "fields": [
            {"name": "weight", "group": "w", "unit": "kg", "scale": 1000, "offset": -0.5},
            {"name": "status", "type": "string", "optional": True},
        ],
        "poll": "2s", "query": "\\x1bP\\r\\n", "timeout": "500ms", "replies": 2,
        "reopen_delay": "100ms", "reopen_delay_max": "5s",
    })
    assert opts.port == PortSettings(
        path="/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0", baudrate=2400,
        bytesize=7, parity="E", stopbits=2.0, flow_control="xonxoff", exclusive=False)
    assert opts.port.line == "2400 7E2"
    assert opts.lines == LineSettings(terminator=b"\r\n", max_line=64, encoding="latin-1")
    assert opts.parser == ParserSettings(
        "regex", pattern=r"(?P<status>ST|US),GS,(?P<w>[+-][\d.]+)kg")
    assert opts.fields == (
        FieldSpec("weight", "float", scale=1000.0, offset=-0.5, unit="kg", group="w"),
        FieldSpec("status", "string", group="status", optional=True),
    )
    assert opts.poll == PollSettings(interval=2.0, query=b"\x1bP\r\n", timeout=0.5, replies=2)
    assert opts.reopen == ReopenSettings(delay=0.1, max_delay=5.0)
    assert [opts.reopen.after(n) for n in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_csv_kv_and_json_locators() -> None:
    csv = options({"port": "/dev/ttyUSB0", "protocol": "lines", "parser": "csv",
                   "delimiter": ";", "fields": [{"name": "flow", "column": 2, "type": "int"}]})
    assert csv.parser == ParserSettings("csv", delimiter=";")
    assert csv.fields == (FieldSpec("flow", "int", column=2),)
    kv = options({"port": "/dev/ttyUSB0", "protocol": "lines", "parser": "kv",
                  "separator": "|", "assign": ":", "fields": [{"name": "t"}]})
    assert kv.parser == ParserSettings("kv", separator="|", assign=":")
    assert kv.fields == (FieldSpec("t", key="t"),)
    js = options({"port": "/dev/ttyUSB0", "protocol": "lines", "parser": "json"})
    assert (js.parser, js.fields, js.lines.max_line) == (ParserSettings("json"), (), 1024)


def test_binary_frames() -> None:
    opts = options({
        "port": "/dev/ttyS1", "protocol": "frames", "poll": "1s", "query_hex": "0x01 0x03",
        "frame": {"start": "AA 55", "length": {"at": 2, "size": 2, "endian": "little",
                                               "counts": "rest", "adjust": -1},
                  "checksum": {"kind": "crc16-modbus", "from": 2}, "end": "0d:0a",
                  "max_frame": 128},
        "fields": [{"name": "t", "at": 4, "type": "int16", "scale": 0.1, "unit": "Cel"},
                   {"name": "on", "at": 6, "type": "bool", "bit": 3}],
    })
    assert opts.frame == FrameSpec(
        start=b"\xaa\x55", length=LengthField(at=2, size=2, endian="little", counts="rest",
                                              adjust=-1),
        checksum=ChecksumSpec("crc16-modbus", start=2), end=b"\r\n", max_frame=128)
    assert opts.fields == (FieldSpec("t", "int16", scale=0.1, unit="Cel", at=4),
                           FieldSpec("on", "bool", at=6, bit=3))
    assert opts.poll == PollSettings(interval=1.0, query=b"\x01\x03", timeout=1.0)


def test_escapes_and_hex() -> None:
    assert unescape("R\\r\\n") == b"R\r\n" == unescape("R\r\n")
    assert unescape("\\x02Q\\x03\\\\\\t\\0\\e") == b"\x02Q\x03\\\t\x00\x1b"
    assert hex_bytes("0xAA 0x55") == hex_bytes("aa55") == hex_bytes("AA-55") == b"\xaa\x55"
    with pytest.raises(ValueError, match="invalid escape"):
        unescape("\\x4")
    with pytest.raises(ValueError, match="not a single byte"):
        unescape("\u20ac")


@pytest.mark.parametrize(("table", "expected"), [
    ({"protocol": "nmae"}, [
        P + "port: missing required key",
        P + "protocol: unknown value 'nmae' (did you mean 'nmea'?); expected one of nmea, "
            "lines, frames"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "json", "parity": "x", "stopbits": 3,
      "flow_control": "rts", "bytesize": 9, "baudrate": 10}, [
        P + "baudrate: expected an integer >= 50, got 10",
        P + "bytesize: expected an integer <= 8, got 9",
        P + "parity: unknown parity 'x'; expected one of none, even, odd, mark, space",
        P + "stopbits: expected 1, 1.5 or 2, got 3",
        P + "flow_control: unknown value 'rts' (did you mean 'rtscts'?); expected one of "
            "none, rtscts, xonxoff"]),
    ({"port": "/dev/x", "protocol": "lines"}, [P + "parser: missing required key"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "csv", "fields": [
        {"name": "a"}, {"name": "a", "column": 1, "type": "bool", "scale": 2},
        {"name": "x/y", "column": 2}, {"name": "k", "column": 3, "key": "k"}]}, [
        P + "fields[0].column: missing required key",
        P + "fields[1].scale: scale and offset apply to numbers only, not to type 'bool'",
        P + "fields[1].name: duplicate field name 'a'",
        P + "fields[2].name: invalid point name 'x/y'; expected letters, digits, '_', '-' or "
            "'.' ('/' is not allowed)",
        P + "fields[3].key: unknown key; expected one of column, name, offset, optional, "
            "scale, type, unit"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "regex", "pattern": "(?P<a>\\d+",
      "fields": [{"name": "a"}]}, [
        P + "pattern: invalid regular expression: missing ), unterminated subpattern at "
            "position 0"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "regex", "pattern": "(?P<a>\\d+)",
      "fields": [{"name": "b"}, {"name": "c", "group": "z"}]}, [
        P + "fields[0].name: no group named 'b' in the pattern; expected one of a",
        P + "fields[1].group: no group named 'z' in the pattern; expected one of a"]),
    ({"port": "/dev/x", "protocol": "frames"}, [
        P + "frame: missing required table",
        P + "fields: missing required array of tables"]),
    ({"port": "/dev/x", "protocol": "frames",
      "frame": {"start": "AA 5", "size": 4, "length": {"at": 2}, "checksum": {"kind": "crc32"}},
      "fields": [{"name": "a", "at": 3, "type": "uint16"}]}, [
        P + "frame.start: invalid hex bytes 'AA 5'; expected pairs of hex digits such as 'AA 55'",
        P + "frame.checksum.kind: unknown value 'crc32' (did you mean 'crc8'?); expected one of "
            "crc16-modbus, crc8, crc8-maxim, xor, sum8, sum16",
        P + "frame: expected exactly one of size or length",
        P + "fields[0].at: a uint16 at byte 3 ends past the 4-byte frame"]),
    ({"port": "/dev/x", "protocol": "frames", "frame": {"size": 4},
      "fields": [{"name": "b", "type": "float"}]}, [
        P + "frame: a frame without start bytes needs a checksum to find its boundaries",
        P + "fields[0].type: unknown value 'float' (did you mean 'float64'?); expected one of "
            "uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64, bool",
        P + "fields[0].at: missing required key"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "json", "poll": "1s"}, [
        "gatewayd.toml: devices.gps: polled mode needs exactly one of query (text with "
        "escapes) or query_hex (hex bytes)"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "json", "poll": "1s",
      "query": "R\\q", "timeout": "2s"}, [
        P + "query: invalid escape '\\\\q'; expected \\r, \\n, \\t, \\0, \\e, \\\\ or \\xHH",
        P + "timeout: expected a timeout no longer than poll (1s), got 2s"]),
    ({"port": "/dev/x", "protocol": "lines", "parser": "json", "query": "R"}, [
        P + "query: only used in polled mode; set poll as well"]),
    ({"port": "/dev/x", "protocol": "nmea", "fields": [], "sentences": ["GGA", "GSV"],
      "reopen_delay": "2s", "reopen_delay_max": "1s", "baud": 4800}, [
        P + "fields: not used with protocol 'nmea'; points selects the NMEA points (latitude, "
            "longitude, altitude, speed, course, fix_quality, satellites, hdop, pdop, vdop, "
            "fix_type)",
        P + "sentences: unknown value 'GSV'; expected some of GGA, RMC, VTG, GSA, GLL",
        P + "reopen_delay_max: expected at least reopen_delay (2s), got 1s",
        P + "baud: unknown key (did you mean 'baudrate'?); expected one of baudrate, bytesize, "
            "driver, exclusive, fields, flow_control, max_line, once_per_epoch, parity, points, "
            "port, protocol, reopen_delay, reopen_delay_max, require_checksum, sentences, "
            "stopbits, terminator"]),
])
def test_problems_name_the_key_and_what_was_expected(table: dict[str, Any],
                                                     expected: list[str]) -> None:
    assert problems(table) == expected


GATEWAY = """
[gateway]
id = "gw-0001"
state_dir = "{root}/state"
runtime_dir = "{root}/run"
"""


def test_loaded_from_toml_through_the_entry_point(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    main.write_text(GATEWAY.format(root=tmp_path) + r"""
[devices.gps]
driver = "serial"
port = "/dev/serial/by-id/usb-u-blox_AG_-_www.u-blox.com_u-blox_GNSS_receiver-if00"
protocol = "nmea"
points = ["latitude", "longitude", "speed"]

[devices.scale]
driver = "serial"
port = "/dev/ttyUSB1"
protocol = "lines"
parser = "regex"
pattern = '(?P<weight>[+-]\d+\.\d+)kg'
fields = [{ name = "weight", unit = "kg" }]
poll = "1s"
query = 'S\r\n'
""")
    cfg = load_config(main, env={})
    gps, scale = cfg.devices["gps"], cfg.devices["scale"]
    assert gps.driver == "serial"
    assert gps.options.nmea.points == ("latitude", "longitude", "speed")
    assert scale.options.poll == PollSettings(interval=1.0, query=b"S\r\n", timeout=1.0)

    (tmp_path / "gatewayd.toml").write_text(GATEWAY.format(root=tmp_path) + """
[devices.scale]
driver = "serial"
port = "/dev/ttyUSB1"
protocol = "lines"
parser = "kv"
max_line = 0
""")
    with pytest.raises(ConfigError) as info:
        load_config(main, env={})
    assert [str(p) for p in info.value.problems] == [
        f"{main}: devices.scale.max_line: expected an integer >= 1, got 0"]
