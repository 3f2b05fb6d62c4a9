"""Why a command is refused or fails: a fixed set of named reasons.

The reason is what the result message, the audit log and the metrics carry;
the detail is a human sentence that never holds a secret.
"""

from __future__ import annotations

from typing import Final

from gatewayd.errors import GatewayError

# refused: nothing was done
MALFORMED_TOKEN: Final = "malformed token"  # noqa: S105 - a reason, not a secret
ALGORITHM_NOT_ALLOWED: Final = "algorithm not allowed"
UNKNOWN_KEY: Final = "unknown key"
BAD_SIGNATURE: Final = "bad signature"
MISSING_CLAIM: Final = "missing claim"
WRONG_AUDIENCE: Final = "wrong audience"
EXPIRED: Final = "expired"
NOT_YET_VALID: Final = "not yet valid"
LIFETIME_TOO_LONG: Final = "lifetime too long"
REPLAYED: Final = "replayed"
REPLAY_CACHE_FULL: Final = "replay cache full"
REPLAY_CACHE_UNAVAILABLE: Final = "replay cache unavailable"
RATE_LIMITED: Final = "rate limit exceeded"
BAD_COMMAND: Final = "bad command"
UNKNOWN_ACTION: Final = "unknown action"
OUT_OF_SCOPE: Final = "out of scope"
UNKNOWN_DEVICE: Final = "unknown device"
UNKNOWN_POINT: Final = "unknown point"
NOT_WRITABLE: Final = "not writable"
OUT_OF_RANGE: Final = "out of range"
BAD_VALUE: Final = "bad value"
TUNNEL_NOT_CONFIGURED: Final = "tunnel not configured"
TUNNEL_REFUSED: Final = "tunnel refused"
AUDIT_UNAVAILABLE: Final = "audit log unavailable"
# failed: the command was accepted, the action did not succeed
DEVICE_NOT_RUNNING: Final = "device not running"
DEVICE_ERROR: Final = "device error"
NO_READING: Final = "no reading yet"
TUNNEL_ERROR: Final = "tunnel error"
INTERNAL_ERROR: Final = "internal error"

REFUSALS: Final = (
    MALFORMED_TOKEN, ALGORITHM_NOT_ALLOWED, UNKNOWN_KEY, BAD_SIGNATURE, MISSING_CLAIM,
    WRONG_AUDIENCE, EXPIRED, NOT_YET_VALID, LIFETIME_TOO_LONG, REPLAYED, REPLAY_CACHE_FULL,
    REPLAY_CACHE_UNAVAILABLE,
    RATE_LIMITED, BAD_COMMAND, UNKNOWN_ACTION, OUT_OF_SCOPE, UNKNOWN_DEVICE, UNKNOWN_POINT,
    NOT_WRITABLE, OUT_OF_RANGE, BAD_VALUE, TUNNEL_NOT_CONFIGURED, TUNNEL_REFUSED,
    AUDIT_UNAVAILABLE,
)
FAILURES: Final = (DEVICE_NOT_RUNNING, DEVICE_ERROR, NO_READING, TUNNEL_ERROR, INTERNAL_ERROR)


class CommandError(GatewayError):
    """A command did not succeed; ``reason`` is one of the named reasons."""

    status: str = "failed"

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        # What was known when it was refused (set by the gate): the verified token
        # and the parsed command, for the audit record.
        self.token: object | None = None
        self.command: object | None = None
        super().__init__(f"{reason}: {detail}" if detail else reason)


class CommandRefused(CommandError):
    """The command was refused before anything was done."""

    status = "refused"


class CommandFailed(CommandError):
    """The command was accepted but its action failed."""

    status = "failed"
