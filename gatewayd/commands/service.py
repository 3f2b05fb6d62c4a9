"""The commands service: the thin asyncio adapter around :class:`~.gate.CommandGate`.

For each message an uplink hands over (:meth:`CommandService.handle`):

1. the gate decides (pure); a refusal goes straight to step 5;
2. the ``jti`` is appended to the replay journal and fsync'd — refused
   (``replay cache unavailable``) if that fails;
3. an ``accepted`` audit record is written — refused (``audit log
   unavailable``) if that fails: nothing acts unaudited;
4. the action runs: a driver's ``write()``, the last reading, the tunnel;
5. the final audit record (``ok``, ``refused`` or ``failed`` with the reason)
   is written, the counters move, and the signed result is returned for the
   uplink to publish.

Decisions are taken one at a time (a lock), actions run outside it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from gatewayd.config.schema import Config
from gatewayd.errors import DriverError, GatewayError, WriteRefused
from gatewayd.identity import IdentityError, load_private_key
from gatewayd.tunnel.errors import TunnelRequestRefused

from . import errors as r
from .actions import CommandTargets
from .audit import AuditLog, iso_time
from .errors import CommandError, CommandFailed, CommandRefused
from .gate import Accepted, CommandGate
from .keys import TrustedKeys, load_trusted_keys
from .policy import (
    Command,
    ReadCommand,
    TunnelClose,
    TunnelOpen,
    WriteCommand,
    granted_scopes,
    parse_command,
)
from .replay import ReplayCache, ReplayJournal
from .results import result_fields, result_payload
from .token import VerifiedToken, peek_claims, peek_jti

log = logging.getLogger(__name__)

ACTION_TIMEOUT = 30.0  # a driver or tunnel call that takes longer is reported as failed
CommandHandler = Callable[[str, bytes], Awaitable[bytes]]


def _short(value: Any, limit: int = 128) -> Any:
    return value[:limit] if isinstance(value, str) else None


def _command_fields(command: Command) -> dict[str, Any]:
    if isinstance(command, WriteCommand):
        return {"device": command.device, "point": command.point, "value": command.value}
    if isinstance(command, ReadCommand):
        return {"device": command.device, "point": command.point}
    if isinstance(command, TunnelOpen):
        return {"ttl": command.ttl}
    return {}


def _describe(payload: bytes, token: VerifiedToken | None,
              command: object | None) -> dict[str, Any]:
    """The audit fields of a command: from the verified token when there is one, else
    from the unverified claims (``verified`` false: what was attempted, not proven)."""
    if token is not None:
        claims: Mapping[str, Any] = token.claims
        out: dict[str, Any] = {"jti": token.jti, "verified": True, "kid": token.kid}
    else:
        claims = peek_claims(payload) or {}
        out = {"jti": peek_jti(payload), "verified": False}
        try:
            command = parse_command(claims, max_tunnel_ttl=float("inf"))
        except CommandRefused:
            command = None
    try:
        scope: str | None = " ".join(granted_scopes(claims))[:256]
    except CommandRefused:
        scope = None
    out.update(sub=_short(claims.get("sub")), iss=_short(claims.get("iss")), scope=scope)
    if isinstance(command, (WriteCommand, ReadCommand, TunnelOpen, TunnelClose)):
        out["action"] = command.action
        out.update(_command_fields(command))
    return out


class _SigningKey:
    """The identity key for signing results, loaded again when its file changes."""

    def __init__(self) -> None:
        self._stamp: tuple[str, int, int] | None = None
        self.key: ec.EllipticCurvePrivateKey | None = None
        self.error: str | None = "not loaded"

    def get(self, path: Any) -> ec.EllipticCurvePrivateKey | None:
        try:
            st = path.stat()
            stamp = (str(path), st.st_mtime_ns, st.st_size)
        except OSError as err:
            self._stamp, self.key = None, None
            self.error = f"{path}: {err.strerror or err}"
            return None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.key, self.error = load_private_key(path), None
            except IdentityError as err:
                self.key, self.error = None, str(err)
                log.warning("commands: results are not signed: %s", err)
        return self.key


class CommandService:
    """Verifies, authorises, audits and carries out commands (see the module docstring)."""

    def __init__(self, config: Config, targets: CommandTargets, *,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.targets = targets
        self._clock = clock
        self._monotonic = monotonic
        cfg = config.commands
        self.gate = CommandGate(cfg, gateway_id=config.gateway.id,
                                keys=TrustedKeys(cfg.trusted_keys_dir), replay=ReplayCache())
        self.journal = ReplayJournal(cfg.replay_file)
        self.audit = AuditLog(cfg.audit_log, max_size=cfg.audit_max_size)
        self._lock = asyncio.Lock()
        self._signing = _SigningKey()
        self.counts: Counter[tuple[str, str]] = Counter()  # (status, reason or "")
        self.audit_errors = 0
        self.journal_errors = 0
        self.last: dict[str, Any] | None = None

    # ---- life cycle --------------------------------------------------------

    async def open(self) -> None:
        """Load the trusted keys and the replay journal. The journal's problems are
        logged, not raised: commands are then refused until it can be written."""
        await self._load_keys()
        try:
            await asyncio.to_thread(self.journal.load, self.gate.replay, self._clock())
        except OSError as err:
            self.journal_errors += 1
            log.error("commands: replay cache %s cannot be used: %s", self.journal.path,
                      err.strerror or err)

    async def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config and load the trusted keys again (SIGHUP)."""
        old = self.config.commands
        cfg = config.commands
        self.config = config
        if cfg.replay_file != old.replay_file:
            log.warning("commands.replay_file changes take effect at the next restart")
        if cfg.audit_log != old.audit_log or cfg.audit_max_size != old.audit_max_size:
            self.audit = AuditLog(cfg.audit_log, max_size=cfg.audit_max_size)
        keys = await self._read_keys()
        self.gate.reconfigure(cfg, gateway_id=config.gateway.id, keys=keys)
        log.info("commands: %d trusted key(s) from %s", len(keys.keys), cfg.trusted_keys_dir)

    async def _read_keys(self) -> TrustedKeys:
        keys = await asyncio.to_thread(load_trusted_keys, self.config.commands.trusted_keys_dir)
        for problem in keys.problems:
            log.warning("commands: trusted key skipped: %s", problem)
        return keys

    async def _load_keys(self) -> None:
        keys = await self._read_keys()
        self.gate.reconfigure(self.config.commands, gateway_id=self.config.gateway.id,
                              keys=keys)
        log.info("commands: %d trusted key(s) from %s", len(keys.keys),
                 self.config.commands.trusted_keys_dir)

    def handler(self, uplink: str) -> CommandHandler:
        """The ``(topic, payload) -> result payload`` callable an uplink calls."""
        return functools.partial(self.handle, uplink=uplink)

    # ---- one command -------------------------------------------------------

    async def handle(self, topic: str, payload: bytes, *, uplink: str) -> bytes:
        """Decide on and carry out one command message; returns the result message.
        Never raises for a bad command (the result says why)."""
        now = self._clock()
        record: dict[str, Any] = {"time": iso_time(now), "uplink": uplink, "topic": topic[:256]}
        extra: dict[str, Any] = {}
        try:
            async with self._lock:
                try:
                    accepted = self._admit(payload, now)
                except CommandRefused as err:
                    token = err.token if isinstance(err.token, VerifiedToken) else None
                    record.update(_describe(payload, token, err.command))
                    raise
                record.update(_describe(payload, accepted.token, accepted.command))
                await self._persist(accepted)
                await self._audit({**record, "status": "accepted", "reason": None,
                                   "detail": ""}, required=True)
            extra = await self._act(accepted.command)
            status, reason, detail = "ok", None, ""
        except CommandError as err:
            status, reason, detail = err.status, err.reason, err.detail
        action = record.get("action") if record.get("verified") else None
        self.counts[(status, reason or "")] += 1
        record.update(status=status, reason=reason, detail=detail, time=iso_time(self._clock()))
        await self._audit(record, required=False)
        self.last = {"time": record["time"], "uplink": uplink, "jti": record["jti"],
                     "action": action, "status": status, "reason": reason}
        level = logging.INFO if status == "ok" else logging.WARNING
        log.log(level, "command %s via %s: %s %s%s", record["jti"], uplink, action or "-",
                status, f" ({reason}: {detail})" if reason else "")
        fields = result_fields(gateway_id=self.config.gateway.id, jti=record["jti"],
                               status=status, reason=reason, detail=detail, action=action,
                               now=self._clock(), extra=extra)
        key = await asyncio.to_thread(self._signing.get, self.config.identity.key_file)
        return result_payload(fields, key, gateway_id=self.config.gateway.id, now=self._clock())

    def _admit(self, payload: bytes, now: float) -> Accepted:
        def tunnel_configured() -> bool:
            return self.targets.tunnel() is not None

        return self.gate.admit(payload, now=now, monotonic=self._monotonic(),
                               device_config=self.targets.device_config,
                               tunnel_configured=tunnel_configured)

    async def _persist(self, accepted: Accepted) -> None:
        try:
            await asyncio.to_thread(self.journal.append, accepted.token.jti,
                                    accepted.replay_until)
            if self.journal.needs_compaction(self.gate.replay):
                self.gate.replay.purge(self._clock())
                await asyncio.to_thread(self.journal.compact, self.gate.replay)
        except OSError as err:
            self.journal_errors += 1
            raise CommandRefused(r.REPLAY_CACHE_UNAVAILABLE,
                                 f"{self.journal.path}: {err.strerror or err}") from None

    async def _audit(self, record: dict[str, Any], *, required: bool) -> None:
        try:
            await asyncio.to_thread(self.audit.append, record)
        except OSError as err:
            self.audit_errors += 1
            log.error("commands: audit log %s not written: %s", self.audit.path,
                      err.strerror or err)
            if required:
                raise CommandRefused(r.AUDIT_UNAVAILABLE,
                                     f"{self.audit.path}: {err.strerror or err}") from None

    # ---- actions -----------------------------------------------------------

    async def _act(self, command: Command) -> dict[str, Any]:
        """Carry out an accepted command; returns extra result fields. Raises
        CommandFailed, or CommandRefused when the driver refuses the value."""
        try:
            async with asyncio.timeout(ACTION_TIMEOUT):
                return await self._dispatch(command)
        except TimeoutError:
            reason = r.TUNNEL_ERROR if isinstance(command, (TunnelOpen, TunnelClose)) \
                else r.DEVICE_ERROR
            raise CommandFailed(reason, f"no answer within {ACTION_TIMEOUT:g}s") from None
        except CommandError:
            raise
        except Exception as err:  # reported as failed, with the traceback logged
            log.exception("commands: %s failed unexpectedly", command.action)
            raise CommandFailed(r.INTERNAL_ERROR, type(err).__name__) from err

    async def _dispatch(self, command: Command) -> dict[str, Any]:
        if isinstance(command, WriteCommand):
            driver = self.targets.driver(command.device)
            if driver is None:
                raise CommandFailed(r.DEVICE_NOT_RUNNING, f"device {command.device!r}")
            try:
                await driver.write(command.point, command.value)
            except WriteRefused as err:
                raise CommandRefused(r.BAD_VALUE, str(err)) from None
            except DriverError as err:
                raise CommandFailed(r.DEVICE_ERROR, str(err)) from None
            return {"device": command.device, "point": command.point, "value": command.value}
        if isinstance(command, ReadCommand):
            reading = self.targets.last_reading(command.device, command.point)
            if reading is None:
                raise CommandFailed(r.NO_READING, f"{command.device}/{command.point}")
            value: Any = reading.value
            if isinstance(value, bytes):
                value = value.hex()
            return {"device": command.device, "point": command.point, "value": value,
                    "unit": reading.unit, "reading_time": iso_time(reading.time / 1e9)}
        tunnel = self.targets.tunnel()
        if tunnel is None:  # removed by a reload since the decision
            raise CommandRefused(r.TUNNEL_NOT_CONFIGURED, "no [tunnel] in the configuration")
        try:
            if isinstance(command, TunnelOpen):
                await tunnel.open(command.ttl)
                return {"ttl": command.ttl}
            await tunnel.close()
            return {}
        except TunnelRequestRefused as err:  # nothing changed (a TTL over max_ttl, the mode)
            raise CommandRefused(r.TUNNEL_REFUSED, str(err)) from None
        except (GatewayError, OSError) as err:
            raise CommandFailed(r.TUNNEL_ERROR, str(err)) from None

    # ---- status ------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter()
        by_reason: dict[str, dict[str, int]] = {}
        for (status, reason), n in self.counts.items():
            by_status[status] += n
            if reason:
                by_reason.setdefault(status, {})[reason] = n
        keys = self.gate.keys
        return {
            "trusted_keys": len(keys.keys),
            "keys": [k.describe() for k in keys.keys.values()],
            "key_problems": list(keys.problems),
            "received": sum(by_status.values()),
            "ok": by_status["ok"],
            "refused": by_status["refused"],
            "failed": by_status["failed"],
            "reasons": by_reason,
            "replay_cache": len(self.gate.replay),
            "replay_file": str(self.journal.path),
            "journal_errors": self.journal_errors,
            "audit_log": str(self.audit.path),
            "audit_errors": self.audit_errors,
            "result_signing": self._signing.error or "ok",
            "last": self.last,
        }
