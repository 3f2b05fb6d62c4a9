"""What a verified token asks for, and whether it may: pure functions.

The ``cmd`` claim names one action:

- ``{"action": "write", "device": D, "point": P, "value": V}`` — scope ``write:D/P``;
- ``{"action": "read", "device": D, "point": P}`` — scope ``read:D/P``;
- ``{"action": "tunnel.open", "ttl": SECONDS}`` — scope ``tunnel:open``;
- ``{"action": "tunnel.close"}`` — scope ``tunnel:close``.

The ``scope`` claim is a space-separated string (or an array of strings) of
granted scopes ``ACTION:TARGET``. ``ACTION`` is literal; ``TARGET`` is a
shell-style pattern (``*``, ``?``, ``[...]``; ``*`` also matches ``/``):
``write:boiler/*`` grants writes to every point of ``boiler``, ``tunnel:*``
both tunnel actions.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import errors as r
from .errors import CommandRefused

MAX_NAME: Final = 128
MAX_STRING_VALUE: Final = 1024
ACTIONS: Final = ("write", "read", "tunnel.open", "tunnel.close")

Scalar = bool | int | float | str


@dataclass(frozen=True)
class WriteCommand:
    device: str
    point: str
    value: Scalar
    action: str = "write"

    @property
    def scope(self) -> str:
        return f"write:{self.device}/{self.point}"


@dataclass(frozen=True)
class ReadCommand:
    device: str
    point: str
    action: str = "read"

    @property
    def scope(self) -> str:
        return f"read:{self.device}/{self.point}"


@dataclass(frozen=True)
class TunnelOpen:
    ttl: float
    action: str = "tunnel.open"

    @property
    def scope(self) -> str:
        return "tunnel:open"


@dataclass(frozen=True)
class TunnelClose:
    action: str = "tunnel.close"

    @property
    def scope(self) -> str:
        return "tunnel:close"


Command = WriteCommand | ReadCommand | TunnelOpen | TunnelClose


def _name(cmd: Mapping[str, Any], key: str) -> str:
    value = cmd.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME \
            or not value.isprintable() or "/" in value:
        raise CommandRefused(r.BAD_COMMAND, f"cmd.{key} must be a name of 1 to {MAX_NAME} "
                                            "printable characters without '/'")
    return value


def _value(cmd: Mapping[str, Any]) -> Scalar:
    if "value" not in cmd:
        raise CommandRefused(r.BAD_COMMAND, "cmd.value is missing")
    value = cmd["value"]
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandRefused(r.BAD_VALUE, f"{value!r} is not a finite number")
    if isinstance(value, str) and len(value) > MAX_STRING_VALUE:
        raise CommandRefused(r.BAD_VALUE, f"a string value has at most {MAX_STRING_VALUE} "
                                          "characters")
    if not isinstance(value, (bool, int, float, str)):
        raise CommandRefused(r.BAD_VALUE, "cmd.value must be a number, a boolean or a string")
    return value


def parse_command(claims: Mapping[str, Any], *, max_tunnel_ttl: float) -> Command:
    """The command the ``cmd`` claim names; raises CommandRefused (``missing claim``,
    ``unknown action``, ``bad command``, ``bad value``)."""
    cmd = claims.get("cmd")
    if cmd is None:
        raise CommandRefused(r.MISSING_CLAIM, "cmd")
    if not isinstance(cmd, dict):
        raise CommandRefused(r.BAD_COMMAND, "cmd is not a JSON object")
    action = cmd.get("action")
    if action not in ACTIONS:
        shown = repr(action)[:40]
        raise CommandRefused(r.UNKNOWN_ACTION, f"action {shown}; expected one of "
                                               f"{', '.join(ACTIONS)}")
    allowed = {"write": {"action", "device", "point", "value"},
               "read": {"action", "device", "point"},
               "tunnel.open": {"action", "ttl"}, "tunnel.close": {"action"}}[action]
    extra = sorted(set(cmd) - allowed)
    if extra:
        raise CommandRefused(r.BAD_COMMAND, f"unexpected key(s) in cmd: {', '.join(extra)}"[:200])
    if action == "write":
        return WriteCommand(_name(cmd, "device"), _name(cmd, "point"), _value(cmd))
    if action == "read":
        return ReadCommand(_name(cmd, "device"), _name(cmd, "point"))
    if action == "tunnel.open":
        ttl = cmd.get("ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) \
                or not 0 < ttl <= max_tunnel_ttl:
            raise CommandRefused(r.BAD_COMMAND, f"cmd.ttl must be seconds in (0, "
                                                f"{max_tunnel_ttl:g}]")
        return TunnelOpen(float(ttl))
    return TunnelClose()


def granted_scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``scope`` claim as a tuple; raises CommandRefused when absent or malformed."""
    scope = claims.get("scope")
    if scope is None:
        raise CommandRefused(r.MISSING_CLAIM, "scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        return tuple(scope)
    raise CommandRefused(r.MALFORMED_TOKEN, "scope is not a string or a list of strings")


def scope_allows(granted: Iterable[str], required: str) -> bool:
    """True when one granted scope covers ``required`` (``ACTION:TARGET``)."""
    action, _, target = required.partition(":")
    for scope in granted:
        g_action, sep, g_target = scope.partition(":")
        if sep and g_action == action and fnmatch.fnmatchcase(target, g_target):
            return True
    return False


def check_scope(claims: Mapping[str, Any], command: Command) -> None:
    """Raises CommandRefused (``out of scope``) unless the token grants the command."""
    granted = granted_scopes(claims)
    if not scope_allows(granted, command.scope):
        raise CommandRefused(r.OUT_OF_SCOPE, f"{command.scope} is not granted by "
                                             f"{' '.join(granted)[:200]!r}")


@dataclass(frozen=True)
class WriteLimits:
    """The range a point accepts (None: no bound on that side)."""

    min: float | None = None
    max: float | None = None


def write_limits(options: Any, device: str, point: str) -> WriteLimits:
    """The declared limits of ``point`` in a device's driver options.

    Drivers declare points as ``options.points``, each with a ``name`` and a
    ``writable`` that is None (not writable) or has ``min`` and ``max``. A
    driver that declares no points has nothing writable. Raises CommandRefused
    (``unknown point``, ``not writable``).
    """
    points = getattr(options, "points", None)
    if points is None:
        raise CommandRefused(r.NOT_WRITABLE, f"device {device!r} declares no writable points")
    for spec in points:
        if getattr(spec, "name", None) != point:
            continue
        writable = getattr(spec, "writable", None)
        if writable is None or writable is False:
            raise CommandRefused(r.NOT_WRITABLE, f"{device}/{point} is not declared writable")
        lo, hi = getattr(writable, "min", None), getattr(writable, "max", None)
        return WriteLimits(None if lo is None else float(lo), None if hi is None else float(hi))
    raise CommandRefused(r.UNKNOWN_POINT, f"device {device!r} has no point {point!r}")


def check_value(command: WriteCommand, limits: WriteLimits) -> None:
    """Raises CommandRefused (``out of range``) for a number outside the limits. Other
    kinds (true/false, text) are checked by the driver against the point's type."""
    value = command.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (limits.min is not None and value < limits.min) or \
            (limits.max is not None and value > limits.max):
        lo = "-inf" if limits.min is None else f"{limits.min:g}"
        hi = "inf" if limits.max is None else f"{limits.max:g}"
        raise CommandRefused(r.OUT_OF_RANGE, f"{value:g} is outside [{lo}, {hi}] of "
                                             f"{command.device}/{command.point}")
