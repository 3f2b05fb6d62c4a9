"""The decision on one command message, without I/O: verified, not replayed,
within the rate limits, well-formed, in scope, and allowed by the target.

:meth:`CommandGate.admit` returns the accepted command (its ``jti`` already
entered in the in-memory replay cache) or raises
:class:`~.errors.CommandRefused` with the named reason. The caller persists
the ``jti`` before acting on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.driver import DeviceConfig

from . import errors as r
from .config import CommandsConfig
from .errors import CommandRefused
from .keys import TrustedKeys
from .policy import (
    Command,
    ReadCommand,
    TunnelClose,
    TunnelOpen,
    WriteCommand,
    check_scope,
    check_value,
    parse_command,
    write_limits,
)
from .ratelimit import RateLimiter
from .replay import ReplayCache
from .token import TokenRules, VerifiedToken, verify_token


@dataclass(frozen=True)
class Accepted:
    token: VerifiedToken
    command: Command
    replay_until: float  # the jti is refused until then


class CommandGate:
    """Holds the keys, the replay cache and the rate limiters of one gateway."""

    def __init__(self, config: CommandsConfig, *, gateway_id: str,
                 keys: TrustedKeys, replay: ReplayCache) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.keys = keys
        self.replay = replay
        self.rate = RateLimiter(config.rate_limit, max_keys=1)
        self.point_rate = RateLimiter(config.point_rate_limit)

    def reconfigure(self, config: CommandsConfig, *, gateway_id: str,
                    keys: TrustedKeys) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.keys = keys
        self.rate.reconfigure(config.rate_limit)
        self.point_rate.reconfigure(config.point_rate_limit)

    def admit(self, payload: bytes, *, now: float, monotonic: float,
              device_config: Callable[[str], DeviceConfig | None],
              tunnel_configured: Callable[[], bool]) -> Accepted:
        """Decide on one command message (see the module docstring)."""
        cfg = self.config
        token = verify_token(payload, self.keys, TokenRules(
            audience=self.gateway_id, max_lifetime=cfg.max_lifetime,
            clock_skew=cfg.clock_skew), now=now)
        command: Command | None = None
        try:
            command = parse_command(token.claims, max_tunnel_ttl=cfg.max_tunnel_ttl)
        except CommandRefused:
            pass  # refused below, after the replay check: a bad command burns its jti too
        try:
            return self._authorise(token, command, now=now, monotonic=monotonic,
                                   device_config=device_config,
                                   tunnel_configured=tunnel_configured)
        except CommandRefused as err:
            err.token, err.command = token, command
            raise

    def _authorise(self, token: VerifiedToken, command: Command | None, *, now: float,
                   monotonic: float, device_config: Callable[[str], DeviceConfig | None],
                   tunnel_configured: Callable[[], bool]) -> Accepted:
        cfg = self.config
        if self.replay.seen(token.jti, now):
            raise CommandRefused(r.REPLAYED, f"jti {token.jti!r} was used before")
        if self.replay.full(now):
            raise CommandRefused(r.REPLAY_CACHE_FULL,
                                 f"{len(self.replay)} unexpired commands remembered")
        until = token.exp + cfg.clock_skew
        self.replay.add(token.jti, until)
        if not self.rate.allow("*", monotonic):
            raise CommandRefused(r.RATE_LIMITED, f"more than {cfg.rate_limit.count} commands "
                                                 f"in {cfg.rate_limit.per:g}s")
        if command is None:
            command = parse_command(token.claims, max_tunnel_ttl=cfg.max_tunnel_ttl)  # raises
        check_scope(token.claims, command)
        if isinstance(command, (WriteCommand, ReadCommand)):
            device = device_config(command.device)
            if device is None:
                raise CommandRefused(r.UNKNOWN_DEVICE, f"no device {command.device!r}")
            if isinstance(command, WriteCommand):
                check_value(command, write_limits(device.options, command.device,
                                                  command.point))
                key = f"{command.device}/{command.point}"
                if not self.point_rate.allow(key, monotonic):
                    limit = cfg.point_rate_limit
                    raise CommandRefused(r.RATE_LIMITED, f"more than {limit.count} writes to "
                                                         f"{key} in {limit.per:g}s")
        elif isinstance(command, (TunnelOpen, TunnelClose)) and not tunnel_configured():
            raise CommandRefused(r.TUNNEL_NOT_CONFIGURED, "no [tunnel] in the configuration")
        return Accepted(token, command, until)
