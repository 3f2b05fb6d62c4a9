"""The whole configuration as frozen dataclasses. Defaults live here, once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A module import, not a name import: gatewayd.driver imports gatewayd.config.section,
# so either module may be the first one loaded.
import gatewayd.commands.config as cmdcfg
import gatewayd.driver as drv
import gatewayd.local.config as localcfg
import gatewayd.tunnel.config as tuncfg
from gatewayd.config.section import (
    Section,
    boolean,
    choice,
    duration,
    integer,
    nonempty_string,
    size,
    string,
)
from gatewayd.config.units import parse_host_port
from gatewayd.uplink.config import UplinkConfig, parse_uplink


def host_port(value: object) -> str:
    parse_host_port(string(value))
    return str(value)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class GatewaySection:
    id: str
    state_dir: Path
    runtime_dir: Path


@dataclass(frozen=True)
class BufferConfig:
    path: Path
    max_size: int
    commit_interval: float
    durability: str  # batched | every-commit
    max_pending: int


_IDENTITY_DIR = Path("/var/lib/gatewayd/identity")  # parse_config derives it from state_dir


@dataclass(frozen=True)
class IdentityConfig:
    key_file: Path
    cert_file: Path
    csr_file: Path = _IDENTITY_DIR / "gateway.csr"
    ssh_key_file: Path = _IDENTITY_DIR / "ssh_ed25519"  # the OpenSSH public key: + ".pub"
    ca_file: Path | None = None  # install-cert checks the chain against it when set
    expiry_warning_days: int = 30


@dataclass(frozen=True)
class ControlConfig:
    socket: Path
    metrics_listen: str | None  # "127.0.0.1:9108" or None


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    buffer: BufferConfig
    identity: IdentityConfig
    control: ControlConfig
    log_level: str
    status_interval: float
    commands: cmdcfg.CommandsConfig
    devices: Mapping[str, drv.DeviceConfig] = field(default_factory=dict)
    uplinks: Mapping[str, UplinkConfig] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    tunnel: tuncfg.TunnelConfig | None = None  # None: no [tunnel] table
    local: localcfg.LocalConfig | None = None  # local ingress (MQTT broker, CoAP server)


def _name_ok(s: Section, key: str, what: str) -> bool:
    if _NAME.fullmatch(key) and "/" not in key:
        return True
    s.error(key, f"invalid {what} name {key!r}; expected letters, digits, '_', '-' or '.'")
    return False


def parse_device(name: str, s: Section) -> drv.DeviceConfig | None:
    driver = s.get("driver", nonempty_string)
    priority = s.get("priority", integer(-100, 100), 0)
    enabled = s.get("enabled", boolean, True)
    if not driver:
        s.done()
        return None
    cls = drv.load_driver(driver)
    if cls is None:
        known = ", ".join(drv.driver_names())
        s.error("driver", f"unknown driver {driver!r}; expected one of {known}")
        return None
    s.mark_used("driver", "priority", "enabled")
    options = cls.parse_options(s)
    s.done()
    return drv.DeviceConfig(name=name, driver=driver, priority=priority, enabled=enabled,
                        options=options)


def parse_config(root: Section, env: Mapping[str, str] | None = None,
                 files: tuple[str, ...] = ()) -> Config:
    env = os.environ if env is None else env
    g = root.table("gateway", required=True)
    gw_id = g.get("id", nonempty_string)
    if gw_id and not _NAME.fullmatch(gw_id):
        g.error("id", f"invalid gateway id {gw_id!r}; expected letters, digits, '_', '-' or '.'")
    state_default = env.get("STATE_DIRECTORY", "/var/lib/gatewayd").split(":")[0]
    runtime_default = env.get("RUNTIME_DIRECTORY", "/run/gatewayd").split(":")[0]
    state_dir = Path(g.get("state_dir", nonempty_string, state_default))
    runtime_dir = Path(g.get("runtime_dir", nonempty_string, runtime_default))
    g.done()

    b = root.table("buffer")
    buffer = BufferConfig(
        path=Path(b.get("path", nonempty_string, str(state_dir / "buffer.sqlite"))),
        max_size=b.get("max_size", size(lo=512 * 1024), 256 * 1024 * 1024),
        commit_interval=b.get("commit_interval", duration(lo=0.001), 0.2),
        durability=b.get("durability", choice("batched", "every-commit"), "batched"),
        max_pending=b.get("max_pending", integer(100, 10_000_000), 100_000),
    )
    b.done()

    i = root.table("identity")
    ident_dir = state_dir / "identity"
    identity = IdentityConfig(
        key_file=Path(i.get("key_file", nonempty_string, str(ident_dir / "gateway.key"))),
        cert_file=Path(i.get("cert_file", nonempty_string, str(ident_dir / "gateway.crt"))),
        csr_file=Path(i.get("csr_file", nonempty_string, str(ident_dir / "gateway.csr"))),
        ssh_key_file=Path(i.get("ssh_key_file", nonempty_string,
                                str(ident_dir / "ssh_ed25519"))),
        ca_file=Path(ca) if (ca := i.get("ca_file", nonempty_string, None)) else None,
        expiry_warning_days=i.get("expiry_warning_days", integer(0, 3650), 30),
    )
    i.done()
    commands = cmdcfg.parse_commands(root.table("commands"), state_dir=state_dir)

    c = root.table("control")
    control = ControlConfig(
        socket=Path(c.get("socket", nonempty_string, str(runtime_dir / "control.sock"))),
        metrics_listen=c.get("metrics_listen", host_port, None),
    )
    c.done()

    lg = root.table("logging")
    log_level = lg.get("level", choice(*LOG_LEVELS), "info")
    status_interval = lg.get("status_interval", duration(lo=1.0), 5.0)
    lg.done()

    devices: dict[str, drv.DeviceConfig] = {}
    for name, ds in root.table("devices").tables():
        if _name_ok(root.table("devices"), name, "device"):
            dev = parse_device(name, ds)
            if dev is not None:
                devices[name] = dev

    uplinks: dict[str, UplinkConfig] = {}
    for name, us in root.table("uplinks").tables():
        if _name_ok(root.table("uplinks"), name, "uplink"):
            uplinks[name] = parse_uplink(name, us, gateway_id=gw_id or "gateway")
    tunnel = tuncfg.parse_tunnel(root, default_key_file=identity.ssh_key_file)
    local = localcfg.parse_local(root.table("local"), config_dir=Path(
        files[0]).parent if files else Path("/etc/gatewayd"))
    root.done()

    return Config(
        gateway=GatewaySection(id=gw_id or "", state_dir=state_dir, runtime_dir=runtime_dir),
        buffer=buffer,
        identity=identity,
        control=control,
        log_level=log_level,
        status_interval=status_interval,
        commands=commands,
        devices=devices,
        uplinks=uplinks,
        files=files,
        tunnel=tunnel,
        local=local,
    )


def as_dict(value: Any) -> Any:
    """A JSON-friendly view of a config value (for status output)."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_dict(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
