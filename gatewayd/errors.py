"""The one exception hierarchy of gatewayd.

Third-party exceptions are converted where they enter (``raise X(...) from err``);
each exception carries the device, point, key or uplink it concerns as fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error gatewayd raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration: where it is and what was expected."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DriverError(GatewayError):
    """A device could not be polled or written."""

    def __init__(self, message: str, *, device: str, point: str | None = None) -> None:
        self.device = device
        self.point = point
        super().__init__(message)


class WriteRefused(DriverError):
    """A write was refused before reaching the device (not writable, out of range)."""


class ProtocolError(GatewayError):
    """Bytes from a peer could not be decoded."""


class StorageError(GatewayError):
    """The durable buffer failed (disk full, I/O error, corruption)."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class UplinkError(GatewayError):
    """An uplink could not connect or publish."""

    def __init__(self, message: str, *, uplink: str) -> None:
        self.uplink = uplink
        super().__init__(message)


class ControlError(GatewayError):
    """The control socket could not be reached or answered an error."""
