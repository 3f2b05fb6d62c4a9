"""What commands act on, as the daemon offers it: device configs, running drivers,
last readings and the tunnel. The service sees only these protocols."""

from __future__ import annotations

from typing import Any, Protocol

from gatewayd.driver import DeviceConfig, Driver
from gatewayd.reading import Reading


class TunnelControl(Protocol):
    """The remote-access tunnel as commands drive it (``daemon.tunnel``)."""

    async def open(self, ttl: float) -> None:
        """Open the tunnel (or keep it open) for ``ttl`` seconds from now."""

    async def close(self) -> None:
        """Close the tunnel."""


class CommandTargets(Protocol):
    def device_config(self, device: str) -> DeviceConfig | None:
        """The device's current (validated) config, or None when none is configured."""

    def driver(self, device: str) -> Driver | None:
        """The device's running driver, or None when it is not running."""

    def last_reading(self, device: str, point: str) -> Reading | None:
        """The latest reading of a point since the driver (re)started, or None."""

    def tunnel(self) -> TunnelControl | None:
        """The tunnel, or None when no ``[tunnel]`` is configured."""


class _Supervised(Protocol):
    def component(self, name: str) -> Any: ...


class _DaemonLike(Protocol):
    @property
    def config(self) -> Any: ...

    @property
    def supervisor(self) -> _Supervised: ...


class DaemonTargets:
    """:class:`CommandTargets` of a running daemon: its config, its supervised
    device runners (``device:NAME`` with ``.driver`` and ``.sink.last``) and its
    ``tunnel`` attribute (absent or None: no tunnel)."""

    def __init__(self, daemon: _DaemonLike) -> None:
        self._daemon = daemon

    def device_config(self, device: str) -> DeviceConfig | None:
        devices = self._daemon.config.devices
        found = devices.get(device)
        return found if isinstance(found, DeviceConfig) else None

    def _runner(self, device: str) -> Any:
        return self._daemon.supervisor.component(f"device:{device}")

    def driver(self, device: str) -> Driver | None:
        driver = getattr(self._runner(device), "driver", None)
        return driver if isinstance(driver, Driver) else None

    def last_reading(self, device: str, point: str) -> Reading | None:
        last = getattr(getattr(self._runner(device), "sink", None), "last", None)
        found = last.get(point) if isinstance(last, dict) else None
        return found if isinstance(found, Reading) else None

    def tunnel(self) -> TunnelControl | None:
        tunnel: TunnelControl | None = getattr(self._daemon, "tunnel", None)
        return tunnel
