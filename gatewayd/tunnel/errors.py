"""The tunnel's named errors and the reasons a tunnel goes down."""

from __future__ import annotations

from typing import Final

from gatewayd.errors import GatewayError

# Why ssh exited (or was not started): the ``last_error_reason`` of status and metrics.
HOST_KEY_MISMATCH: Final = "host_key_mismatch"
AUTH_FAILED: Final = "auth_failed"
KEY_MISSING: Final = "key_missing"
KEY_UNPROTECTED: Final = "key_unprotected"
FORWARD_FAILED: Final = "forward_failed"
CONNECT_REFUSED: Final = "connect_refused"
CONNECT_TIMEOUT: Final = "connect_timeout"
NAME_NOT_RESOLVED: Final = "name_not_resolved"
NETWORK_UNREACHABLE: Final = "network_unreachable"
SERVER_NOT_RESPONDING: Final = "server_not_responding"
CONNECTION_LOST: Final = "connection_lost"
PROXY_FAILED: Final = "proxy_failed"
SSH_NOT_STARTED: Final = "ssh_not_started"
EXITED: Final = "exited"

REASONS: Final = (
    HOST_KEY_MISMATCH, AUTH_FAILED, KEY_MISSING, KEY_UNPROTECTED, FORWARD_FAILED,
    CONNECT_REFUSED, CONNECT_TIMEOUT, NAME_NOT_RESOLVED, NETWORK_UNREACHABLE,
    SERVER_NOT_RESPONDING, CONNECTION_LOST, PROXY_FAILED, SSH_NOT_STARTED, EXITED,
)


class TunnelError(GatewayError):
    """The tunnel failed or a request to it was refused.

    ``reason`` is one of :data:`REASONS` when ssh failed, or ``"refused"`` when an
    ``open``/``close`` request was not acceptable (bad TTL, wrong mode).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class TunnelRequestRefused(TunnelError):
    """``open``/``close`` was refused: nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="refused")
