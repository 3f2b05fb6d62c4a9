"""What a bench is: the devices attached and what they must read, the writes to try,
the adapters to unplug, the broker and the bastion. Loaded from a bench file
(``hil/README.md`` describes the format) or built by the virtual bench; turned into
the gatewayd configuration the checks run the daemon with.

Device tables and the ``[tunnel]`` keys are gatewayd's own, passed through verbatim:
whatever gatewayd can read, a bench can name. Only the keys of the checks (``expect``,
``[[writes]]``, ``[[replug]]``, the probe) are read here.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.config.section import (
    Origins,
    Problems,
    Section,
    duration,
    integer,
    nonempty_string,
    string,
)
from gatewayd.config.units import parse_host_port
from gatewayd.errors import ConfigError, ConfigProblem

UPLINK = "hil"  # the name of the gateway's uplink to the bench's broker
OPERATOR_KID = "hil-operator"


class BenchError(ConfigError):
    """The bench file is invalid; every problem names the file and key path."""


# ---- what the checks expect ---------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What every reading of one point must be: ``value`` exactly (numbers to 1e-9),
    or within ``min``..``max``; with neither, only that the point reads at all."""

    point: str
    value: Any = None
    min: float | None = None
    max: float | None = None

    def holds(self, value: Any) -> bool:
        if self.value is not None:
            if isinstance(self.value, bool) or isinstance(value, bool):
                return value is self.value or value == self.value
            if isinstance(self.value, (int, float)) and isinstance(value, (int, float)):
                return math.isclose(value, self.value, rel_tol=1e-9, abs_tol=1e-9)
            return bool(value == self.value)
        if self.min is None and self.max is None:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.value is not None:
            return f"= {self.value!r}"
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f">= {self.min:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return "any value"


@dataclass(frozen=True)
class BenchDevice:
    name: str
    table: Mapping[str, Any]  # the gatewayd [devices.NAME] table, without `expect`
    expect: tuple[Expectation, ...] = ()

    @property
    def driver(self) -> str:
        return str(self.table.get("driver", ""))


Probe = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class WriteCheck:
    """A signed write command to ``device``/``point``, then its reading must show it.
    ``restore`` writes the value read before back afterwards. ``landed`` (virtual
    bench) reads the value straight from the simulated device."""

    device: str
    point: str
    value: Any
    restore: bool = True
    landed: Probe | None = None


Action = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Replug:
    """Take ``devices`` away and give them back: by ``off``/``on`` commands (a USB power
    switch), by ``actions`` (the virtual bench), or else by asking the operator."""

    what: str
    devices: tuple[str, ...]
    off: tuple[str, ...] | None = None  # argv
    on: tuple[str, ...] | None = None
    actions: tuple[Action, Action] | None = None


@dataclass(frozen=True)
class ClientAuth:
    """How hil itself connects to the broker (to watch telemetry and send commands)."""

    username: str | None = None
    password_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Broker:
    url: str
    ca_file: Path | None
    topic_prefix: str
    uplink: Mapping[str, Any]  # more keys of the gateway's uplink table (auth, format...)
    client: ClientAuth = field(default_factory=ClientAuth)

    @property
    def format(self) -> str:
        return str(self.uplink.get("format", "json"))


@dataclass(frozen=True)
class TunnelBench:
    """The gateway's [tunnel] (keys verbatim but ``mode`` and ``forwards``), the
    bastion-side address of the forward, what it reaches on the gateway, and how hil
    connects to that address: directly, or through a command whose stdin and stdout
    are the connection (e.g. ``ssh -W 127.0.0.1:22001 ops@bastion``)."""

    table: Mapping[str, Any]
    remote: str
    local: str | None = None  # None: hil's own echo service
    connect: str | None = None  # HOST:PORT
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Bench:
    name: str
    gateway_id: str
    broker: Broker
    devices: tuple[BenchDevice, ...]
    writes: tuple[WriteCheck, ...] = ()
    replugs: tuple[Replug, ...] = ()
    tunnel: TunnelBench | None = None
    identity: Mapping[str, Any] | None = None  # verbatim [identity]; None: a fresh one
    env: Mapping[str, str] = field(default_factory=dict)  # for the daemon process
    timeout: float = 60.0  # bound of every wait
    readings: int = 5  # readings per expected point before values are judged


# ---- the bench file -------------------------------------------------------------------


def _argv(value: object) -> tuple[str, ...]:
    """A command: an array of strings (argv) or one string split like a shell would."""
    import shlex

    if isinstance(value, str):
        argv = shlex.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = list(value)
    else:
        raise ValueError("expected a command: a string or an array of strings")
    if not argv:
        raise ValueError("expected a non-empty command")
    return tuple(argv)


def _scalar(value: object) -> object:
    if isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError("expected a number, true/false or a string")


def _expectations(s: Section, key: str) -> tuple[Expectation, ...]:
    if not s.has(key):
        s.mark_used(key)
        return ()
    table = s.table(key)
    out = []
    for point in table.keys():
        raw = table.get(point, lambda v: v)
        if isinstance(raw, dict):
            t = table.table(point)
            lo = t.get("min", _number, None)
            hi = t.get("max", _number, None)
            t.done()
            if lo is not None and hi is not None and lo > hi:
                t.error(None, f"min {lo:g} is above max {hi:g}")
            out.append(Expectation(point, min=lo, max=hi))
        else:
            try:
                out.append(Expectation(point, value=_scalar(raw)))
            except ValueError as err:
                table.error(point, f"{err}, or a table {{ min = .., max = .. }}")
    table.done()
    return tuple(out)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _path(value: object) -> Path:
    return Path(nonempty_string(value))


def _host_port(value: object) -> str:
    parse_host_port(string(value))
    return str(value)


def parse_bench(data: Mapping[str, Any], *, file: str) -> Bench:
    """The bench a bench file describes. Raises BenchError listing every problem."""
    problems = Problems(Origins(file))
    root = Section(data, "", problems)
    b = root.table("bench")
    name = b.get("name", nonempty_string, Path(file).stem)
    gateway_id = b.get("gateway_id", nonempty_string, "gw-hil")
    timeout = b.get("timeout", duration(lo=1.0), 60.0)
    readings = b.get("readings", integer(1, 1000), 5)
    b.done()

    k = root.table("broker", required=True)
    url = k.get("url", nonempty_string)
    ca_file = k.get("ca_file", _path, None)
    prefix = k.get("topic_prefix", nonempty_string, f"gateways/{gateway_id}")
    no_uplink: dict[str, Any] = {}
    uplink: dict[str, Any] = dict(k.get("uplink", _table, no_uplink))
    for reserved in ("url", "ca_file", "topic_prefix", "commands"):
        if reserved in uplink:
            k.error(f"uplink.{reserved}", "set by hil; remove it here")
    uplink.setdefault("auth", {"type": "none"})
    c = k.table("client")
    client = ClientAuth(username=c.get("username", nonempty_string, None),
                        password_file=c.get("password_file", _path, None),
                        cert_file=c.get("cert_file", _path, None),
                        key_file=c.get("key_file", _path, None))
    c.done()
    k.done()

    devices = []
    for dev_name, d in root.table("devices").tables():
        expect = _expectations(d, "expect")
        table = {key: d.get(key, lambda v: v) for key in d.keys() if key != "expect"}
        if "driver" not in table:
            d.error("driver", "missing required key")
        devices.append(BenchDevice(dev_name, table, expect))
    names = {d.name for d in devices}

    writes = []
    for w in root.table_list("writes"):
        device = w.get("device", nonempty_string)
        if device and device not in names:
            w.error("device", f"no device {device!r} in [devices]")
        writes.append(WriteCheck(device or "", w.get("point", nonempty_string) or "",
                                 w.get("value", _scalar), restore=w.get("restore", _boolean,
                                                                         True)))
        w.done()

    replugs = []
    for r in root.table_list("replug"):
        devs = r.get("devices", _names)
        for dev in devs or ():
            if dev not in names:
                r.error("devices", f"no device {dev!r} in [devices]")
        off, on = r.get("off", _argv, None), r.get("on", _argv, None)
        if (off is None) != (on is None):
            r.error("on" if on is None else "off", "off and on go together")
        replugs.append(Replug(r.get("what", nonempty_string, ", ".join(devs or ())),
                              tuple(devs or ()), off, on))
        r.done()

    tunnel = None
    if root.has("tunnel"):
        t = root.table("tunnel")
        remote = t.get("remote", _host_port)
        local = t.get("local", _host_port, None)
        probe = t.table("probe", required=True)
        connect = probe.get("connect", _host_port, None)
        command = probe.get("command", _argv, None)
        if (connect is None) == (command is None):
            probe.error(None, "expected exactly one of connect and command")
        probe.done()
        for reserved in ("mode", "forwards", "enabled"):
            if t.has(reserved):
                t.error(reserved, "set by hil; remove it here")
        table = {key: t.get(key, lambda v: v) for key in t.keys()
                 if key not in ("remote", "local", "probe")}
        tunnel = TunnelBench(table, remote or "", local, connect, command)
    else:
        root.mark_used("tunnel")
    identity = root.get("identity", _table, None)
    root.done()
    if problems.items:
        raise BenchError(problems.items)
    return Bench(name=name, gateway_id=gateway_id,
                 broker=Broker(url or "", ca_file, prefix, uplink, client),
                 devices=tuple(devices), writes=tuple(writes), replugs=tuple(replugs),
                 tunnel=tunnel, identity=identity, timeout=timeout, readings=readings)


def _table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a table")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a non-empty array of device names")
    return tuple(value)


def load_bench(path: Path) -> Bench:
    """Read and check a bench file. Raises BenchError naming the file and key path."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise BenchError([ConfigProblem(str(path), "", err.strerror or str(err))]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BenchError([ConfigProblem(str(path), "", f"invalid TOML: {err}")]) from None
    return parse_bench(data, file=str(path))


# ---- the gatewayd configuration of a run ----------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        text = str(value)
        out = []
        for ch in text:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    bare = key and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in key)
    return key if bare else _toml_value(key)


def _table_text(header: str, table: Mapping[str, Any]) -> str:
    lines = [f"[{header}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps the daemon's state and the operator's trusted key."""

    state: Path
    trusted_keys: Path
    echo_port: int | None = None


def gatewayd_config(bench: Bench, paths: RunPaths, *, devices_enabled: bool = True) -> str:
    """The gatewayd.toml of a run: the bench's devices, one uplink with commands to the
    bench's broker, the tunnel on demand (forwarding to the echo service unless the bench
    names its own target), and the operator key of this run as the only trusted one."""
    parts = [_table_text("gateway", {"id": bench.gateway_id, "state_dir": str(paths.state)}),
             _table_text("logging", {"status_interval": "1s"}),
             _table_text("buffer", {"commit_interval": "50ms"}),
             _table_text("commands", {"trusted_keys_dir": str(paths.trusted_keys),
                                      "max_lifetime": "2m"})]
    if bench.identity is not None:
        parts.append(_table_text("identity", bench.identity))
    uplink: dict[str, Any] = {"url": bench.broker.url, "topic_prefix": bench.broker.topic_prefix,
                              "commands": True, "max_delay": "100ms",
                              "backoff_initial": "200ms", "backoff_max": "2s"}
    if bench.broker.ca_file is not None:
        uplink["ca_file"] = str(bench.broker.ca_file)
    uplink.update(bench.broker.uplink)
    parts.append(_table_text(f"uplinks.{UPLINK}", uplink))
    if bench.tunnel is not None:
        local = bench.tunnel.local or f"127.0.0.1:{paths.echo_port}"
        tunnel = {"backoff_initial": "200ms", "backoff_max": "2s", **bench.tunnel.table,
                  "mode": "on-demand", "forwards": [{"remote": bench.tunnel.remote,
                                                     "local": local}]}
        parts.append(_table_text("tunnel", tunnel))
    for dev in bench.devices:
        table = dict(dev.table)
        if not devices_enabled:
            table["enabled"] = False
        parts.append(_table_text(f"devices.{_toml_key(dev.name)}", table))
    return "\n".join(parts)
