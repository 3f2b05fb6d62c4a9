"""The daemon: builds components from the config, supervises them, talks to systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd import __version__
from gatewayd.buffer import Buffer
from gatewayd.certwatch import CertificateWatch
from gatewayd.commands.actions import DaemonTargets
from gatewayd.components import BufferRunner, DeviceRunner, UplinkRunner
from gatewayd.config import Config, load_config
from gatewayd.control import ControlServer
from gatewayd.driver import DeviceConfig, load_driver
from gatewayd.errors import ConfigError
from gatewayd.local.service import LocalService
from gatewayd.metrics import render
from gatewayd.metrics_http import MetricsHttpServer
from gatewayd.notify import SystemdNotifier, watchdog_interval
from gatewayd.supervisor import Supervisor
from gatewayd.tunnel import control as tunnel_control
from gatewayd.uplink.config import UplinkConfig
from gatewayd.uplink.mqtt import MqttUplink

if TYPE_CHECKING:
    from gatewayd.commands.service import CommandService

log = logging.getLogger(__name__)

STOP_TIMEOUT = 4.0  # systemd is told we stop; we finish well inside 5 s
CONTROL_START_TIMEOUT = 5.0  # READY waits at most this long for the control socket


def _commands_wanted(config: Config) -> bool:
    return any(u.enabled and u.commands for u in config.uplinks.values())


def _command_service(config: Config, targets: DaemonTargets) -> CommandService:
    # Imported only when an uplink carries commands: token checking loads pyjwt and
    # cryptography, about 8 MiB that a telemetry-only gateway does not need.
    from gatewayd.commands.service import CommandService

    return CommandService(config, targets)


def _buffer_routes(config: Config) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    uplinks = {n: u.select for n, u in config.uplinks.items() if u.enabled}
    priorities = {n: d.priority for n, d in config.devices.items()}
    return uplinks, priorities


class Daemon:
    """One running gatewayd: owns the buffer, the supervisor and the control socket."""

    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = SystemdNotifier()
        self.started = time.time()
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._reload_pending = False
        uplinks, priorities = _buffer_routes(config)
        self.buffer = Buffer(config.buffer, uplinks=uplinks, priorities=priorities)
        self.supervisor = Supervisor()
        self._targets = DaemonTargets(self)
        # Signed commands: only when an uplink is configured to carry them.
        self.commands = (_command_service(config, self._targets)
                         if _commands_wanted(config) else None)
        self.certificate = CertificateWatch(config.identity)
        # The remote-access tunnel (None without [tunnel]): open(ttl) / close().
        self.tunnel = tunnel_control.make_tunnel(config.tunnel,
                                                 runtime_dir=config.gateway.runtime_dir)
        # Local ingress: embedded MQTT broker and CoAP server (off without [local.*]).
        self.local = LocalService(config.local, buffer=self.buffer, gateway_id=config.gateway.id)

    # ---- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self.buffer.open()
        if self.commands is not None:
            await self.commands.open()
        try:
            async with self.supervisor as sup, asyncio.TaskGroup() as chores:
                sup.start(BufferRunner(self.buffer))
                for up in self.config.uplinks.values():
                    self._start_uplink(up)
                if self.tunnel is not None:
                    sup.start(self.tunnel)
                self.local.start(sup)
                for dev in self.config.devices.values():
                    self._start_device(dev)
                await self._start_control()
                self.notifier.ready(self.status_line())
                log.info("gatewayd %s started: %d devices, %d uplinks", __version__,
                         len(self.config.devices), len(self.config.uplinks))
                housekeeping = chores.create_task(self._housekeeping())
                await self._serve_signals()
                self.notifier.stopping()
                log.info("stopping")
                housekeeping.cancel()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await sup.stop_all()
                except TimeoutError:
                    log.warning("components did not stop within %.0fs", STOP_TIMEOUT)
        finally:
            await self.buffer.close()
            log.info("stopped")

    async def _serve_signals(self) -> None:
        """Wait for SIGTERM/SIGINT (return) and SIGHUP (reload, then wait again)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self._reload_pending:
                self._reload_pending = False
                await self.reload()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_pending = True
        self._wake.set()

    async def _housekeeping(self) -> None:
        """STATUS= every status_interval; WATCHDOG=1 every half watchdog period while alive."""
        loop = asyncio.get_running_loop()
        wd = watchdog_interval()
        next_status = loop.time() + self.config.status_interval
        next_wd = loop.time() if wd else float("inf")
        while True:
            now = loop.time()
            if now >= next_wd and wd is not None:
                if self.supervisor.alive():
                    self.notifier.watchdog()
                else:
                    log.error("a supervised task died; withholding the watchdog keep-alive")
                next_wd = now + wd
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + self.config.status_interval
            await asyncio.sleep(max(0.0, min(next_status, next_wd) - loop.time()))

    # ---- components --------------------------------------------------------

    def _start_device(self, dev: DeviceConfig) -> None:
        if not dev.enabled:
            return
        cls = load_driver(dev.driver)
        if cls is None:  # validated at load; a package removed since then
            log.error("device %s: driver %r is not installed", dev.name, dev.driver)
            return
        self.supervisor.start(DeviceRunner(cls(dev), self.local.device_sink(self.buffer)))

    def _start_uplink(self, up: UplinkConfig) -> None:
        if not up.enabled:
            return
        self.supervisor.start(UplinkRunner(up.name, MqttUplink(
            up, buffer=self.buffer, gateway_id=self.config.gateway.id,
            identity=self.config.identity, version=__version__, boot_time=self.started,
            commands=(self.commands.handler(up.name)
                      if up.commands and self.commands is not None else None))))

    async def _start_control(self) -> None:
        """Start the control socket and return once it answers (READY promises that
        gatewayctl works), or after CONTROL_START_TIMEOUT if it cannot start (the
        supervisor retries it and status names the error)."""
        control = ControlServer(self.config.control.socket, self.handle_request)
        self.supervisor.start(control)
        try:
            async with asyncio.timeout(CONTROL_START_TIMEOUT):
                await control.listening.wait()
        except TimeoutError:
            log.error("control socket %s is not listening yet", self.config.control.socket)
        if self.config.control.metrics_listen:
            self.supervisor.start(MetricsHttpServer(self.config.control.metrics_listen,
                                                    self._metrics_text))

    # ---- reload ------------------------------------------------------------

    async def reload(self) -> None:
        """Validate the config anew; apply it by restarting only what changed."""
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as err:
            self.reload_failures += 1
            for problem in err.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: keeping the running configuration")
            self.last_reload = {"ok": False, "at": time.time(),
                                "problems": [str(p) for p in err.problems]}
            self.notifier.ready(self.status_line())
            return
        if self.commands is None and _commands_wanted(new):
            commands = _command_service(new, self._targets)
            await commands.open()
            self.commands = commands
        changed = await self._apply(new)
        if self.commands is not None:
            await self.commands.reconfigure(new)  # and the trusted keys, read again
        self.certificate = CertificateWatch(new.identity)
        self.reloads += 1
        self.last_reload = {"ok": True, "at": time.time(), "restarted": changed}
        log.info("reloaded configuration: %s",
                 ", ".join(changed) if changed else "nothing changed")
        self.notifier.ready(self.status_line())

    async def _apply(self, new: Config) -> list[str]:
        old = self.config
        sup = self.supervisor
        changed: list[str] = []
        for key in ("state_dir", "runtime_dir"):
            if getattr(old.gateway, key) != getattr(new.gateway, key):
                log.warning("gateway.%s changes take effect at the next restart", key)
        if old.buffer != new.buffer and old.buffer.path != new.buffer.path:
            log.warning("buffer.path changes take effect at the next restart")
        uplinks, priorities = _buffer_routes(new)
        self.buffer.reconfigure(new.buffer, uplinks=uplinks, priorities=priorities)
        logging.getLogger("gatewayd").setLevel(new.log_level.upper())

        identity_changed = (old.gateway.id != new.gateway.id or old.identity != new.identity)
        for name in sorted(set(old.uplinks) | set(new.uplinks)):
            before, after = old.uplinks.get(name), new.uplinks.get(name)
            if before == after and not identity_changed:
                continue
            await sup.stop(f"uplink:{name}")
            if after is not None:
                self._start_uplink(after)
            changed.append(f"uplink:{name}")
        for name in sorted(set(old.devices) | set(new.devices)):
            dbefore, dafter = old.devices.get(name), new.devices.get(name)
            if dbefore == dafter:
                continue
            await sup.stop(f"device:{name}")
            if dafter is not None:
                self._start_device(dafter)
            changed.append(f"device:{name}")
        if old.tunnel != new.tunnel:
            self.tunnel = await tunnel_control.replace_tunnel(
                sup, self.tunnel, new.tunnel, runtime_dir=old.gateway.runtime_dir)
            changed.append("tunnel")
        changed += await self.local.reload(new.local, gateway_id=new.gateway.id, sup=sup)
        if old.control != new.control:
            await sup.stop("control")
            await sup.stop("metrics-http")
            self.config = new
            await self._start_control()
            changed.append("control")
        self.config = new
        return changed

    # ---- status ------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return {
            "gateway": self.config.gateway.id,
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started,
            "uptime_s": round(time.time() - self.started, 3),
            "config": str(self.config_path),
            "config_files": list(self.config.files),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_reload": self.last_reload,
            "components": self.supervisor.report(),
            "buffer": await self.buffer.stats(),
            "identity": self.certificate.status(),
            "commands": self.commands.health() if self.commands is not None else None,
        }

    def status_line(self) -> str:
        report = self.supervisor.report()
        devices = [c for n, c in report.items() if n.startswith("device:")]
        uplinks = [c for n, c in report.items() if n.startswith("uplink:")]
        dev_ok = sum(1 for c in devices if c["state"] in ("running", "finished"))
        up_ok = sum(1 for c in uplinks if c.get("health", {}).get("connected"))
        backlog, dropped = self.buffer.summary()
        line = (f"devices {dev_ok}/{len(devices)} ok, uplinks {up_ok}/{len(uplinks)} connected, "
                f"backlog {backlog}, dropped {dropped}")
        tunnel = report.get("tunnel")
        if tunnel is not None:
            line += f", tunnel {tunnel.get('health', {}).get('state', tunnel['state'])}"
        return line

    async def _metrics_text(self) -> str:
        return render(await self.status())

    async def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, **await self.status()}
        if cmd == "metrics":
            return {"ok": True, "text": await self._metrics_text()}
        if cmd == "buffer-stats":
            return {"ok": True, "buffer": await self.buffer.stats()}
        if cmd == "reload":
            self.request_reload()
            return {"ok": True}
        if cmd in tunnel_control.COMMANDS:
            return await tunnel_control.handle_request(self.tunnel, request)
        raise ValueError(f"unknown command {cmd!r}")
