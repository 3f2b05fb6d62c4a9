"""The ``[commands]`` section: trusted keys, token limits, rate limits, audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.section import Section, duration, integer, nonempty_string, size

DEFAULT_TRUSTED_KEYS_DIR = Path("/etc/gatewayd/trusted-keys")
DEFAULT_STATE_DIR = Path("/var/lib/gatewayd")


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` per ``per`` seconds (a token bucket: bursts up to ``count``)."""

    count: int
    per: float

    @property
    def rate(self) -> float:
        return self.count / self.per


@dataclass(frozen=True)
class CommandsConfig:
    trusted_keys_dir: Path = DEFAULT_TRUSTED_KEYS_DIR
    audit_log: Path = DEFAULT_STATE_DIR / "commands" / "audit.jsonl"
    audit_max_size: int = 16 * 1024 * 1024
    replay_file: Path = DEFAULT_STATE_DIR / "commands" / "replay.jsonl"
    max_lifetime: float = 300.0
    clock_skew: float = 30.0
    rate_limit: RateLimit = RateLimit(60, 60.0)
    point_rate_limit: RateLimit = RateLimit(10, 60.0)
    max_tunnel_ttl: float = 8 * 3600.0


def _rate_limit(s: Section, key: str, default: RateLimit) -> RateLimit:
    if not s.has(key):
        s.mark_used(key)
        return default
    t = s.table(key)
    limit = RateLimit(count=t.get("count", integer(1, 1_000_000), default.count),
                      per=t.get("per", duration(lo=0.001), default.per))
    t.done()
    return limit


def parse_commands(s: Section, *, state_dir: Path) -> CommandsConfig:
    """Read ``[commands]``; every problem is recorded on ``s``."""
    cmd_dir = state_dir / "commands"
    d = CommandsConfig()
    cfg = CommandsConfig(
        trusted_keys_dir=Path(s.get("trusted_keys_dir", nonempty_string,
                                    str(d.trusted_keys_dir))),
        audit_log=Path(s.get("audit_log", nonempty_string, str(cmd_dir / "audit.jsonl"))),
        audit_max_size=s.get("audit_max_size", size(lo=64 * 1024), d.audit_max_size),
        replay_file=Path(s.get("replay_file", nonempty_string, str(cmd_dir / "replay.jsonl"))),
        max_lifetime=s.get("max_lifetime", duration(lo=1.0), d.max_lifetime),
        clock_skew=s.get("clock_skew", duration(), d.clock_skew),
        rate_limit=_rate_limit(s, "rate_limit", d.rate_limit),
        point_rate_limit=_rate_limit(s, "point_rate_limit", d.point_rate_limit),
        max_tunnel_ttl=s.get("max_tunnel_ttl", duration(lo=1.0), d.max_tunnel_ttl),
    )
    s.done()
    return cfg
