"""The asyncio adapter: runs ``ssh -N -R ...``, restarts it with backoff, opens and
closes the on-demand window, and reports the tunnel's health.

:class:`ReverseTunnel` is one supervised component (``tunnel``) in both modes:

- ``always``: ssh is kept running for as long as the component runs;
- ``on-demand``: the component waits (state ``closed``) until :meth:`open`
  sets a window of ``ttl`` seconds, keeps ssh running inside it, and stops ssh
  when the window ends or on :meth:`close`.

One ssh run: the state is ``connecting`` from the start of ssh until ssh
confirms every forward (``up``); when ssh exits the reason is read from its
messages (:mod:`gatewayd.tunnel.sshlog`), recorded as ``last_error``, and ssh is
started again after a backoff delay (``backoff``). The backoff restarts from
``backoff_initial`` after a run that was up for at least ``backoff_max``.

ssh is started under ``setpriv --pdeathsig TERM`` when setpriv exists, so that
it ends with the daemon even when the daemon is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

from gatewayd.changes import Changes
from gatewayd.config.units import format_duration
from gatewayd.tunnel import errors as reasons
from gatewayd.tunnel.command import known_hosts_text, ssh_argv, ssh_environment
from gatewayd.tunnel.config import TunnelConfig
from gatewayd.tunnel.errors import TunnelError, TunnelRequestRefused
from gatewayd.tunnel.sshlog import (
    SUMMARIES,
    Authenticated,
    ConnectionForwarded,
    Event,
    ForwardUp,
    Problem,
    SshLog,
    TunnelUp,
)
from gatewayd.uplink.pacing import Backoff

log = logging.getLogger(__name__)

STATES: Final = ("stopped", "closed", "connecting", "up", "backoff")
SETPRIV: Final = "/usr/bin/setpriv"
TERMINATE_TIMEOUT: Final = 3.0  # SIGTERM, then SIGKILL after this long
CLOSE_WAIT: Final = 4.0  # close() waits at most this long for ssh to end
MAX_LINE: Final = 64 * 1024


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """``7200`` -> ``"2h"``, ``90`` -> ``"90s"``, ``0.5`` -> ``"500ms"``; any number."""
    if not math.isfinite(seconds) or seconds < 0:
        return repr(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return format_duration(seconds)


def pdeathsig_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig TERM --`` when setpriv is installed, else nothing."""
    return (SETPRIV, "--pdeathsig", "TERM", "--") if os.access(SETPRIV, os.X_OK) else ()


class ReverseTunnel:
    """The supervised ssh reverse tunnel; see the module docstring."""

    name = "tunnel"

    def __init__(self, config: TunnelConfig, *, runtime_dir: Path,
                 python: str = sys.executable, prefix: tuple[str, ...] | None = None) -> None:
        """``runtime_dir`` holds the pinned known_hosts file; ``python`` runs the
        websocket ProxyCommand; ``prefix`` goes before ssh (default:
        :func:`pdeathsig_prefix`)."""
        self.config = config
        self.known_hosts = runtime_dir / "tunnel" / "known_hosts"
        self._python = python
        self._prefix = pdeathsig_prefix() if prefix is None else prefix
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._state = "stopped"
        self._since = time.time()
        self._last_error: str | None = None
        self._last_error_reason: str | None = None
        self._last_error_at: float | None = None
        self._last_close: str | None = None
        self._starts = 0
        self._ups = 0
        self._failures = 0
        self._connections = 0
        self._pid: int | None = None
        self._up_at: float | None = None  # monotonic
        self._retry_at: float | None = None  # monotonic
        self._open_until: float | None = None  # monotonic
        self._open_until_wall: float | None = None
        self._window = asyncio.Event()  # set when open()/close() change the window
        self._changes = Changes()

    # ------------------------------------------------------------ requests

    async def open(self, ttl: float) -> None:
        """Open the tunnel for ``ttl`` seconds from now (on-demand mode); a later
        open replaces the window. Returns at once; ``health()`` shows the progress.

        In ``always`` mode the tunnel is open anyway: nothing changes.
        Raises TunnelRequestRefused when ``ttl`` is not in (0, max_ttl]."""
        if self.config.mode == "always":
            log.info("tunnel: open requested; the tunnel is always on")
            return
        if not (isinstance(ttl, (int, float)) and math.isfinite(ttl)
                and 0 < ttl <= self.config.max_ttl):
            shown = human_duration(ttl) if isinstance(ttl, (int, float)) else repr(ttl)
            raise TunnelRequestRefused(
                f"tunnel ttl {shown} refused; expected more than 0s and at most "
                f"max_ttl ({human_duration(self.config.max_ttl)})")
        self._open_until = asyncio.get_running_loop().time() + ttl
        self._open_until_wall = time.time() + ttl
        log.info("tunnel: opened for %s (until %s)", human_duration(ttl),
                 _iso(self._open_until_wall))
        self._window.set()
        self._touch()

    async def close(self) -> None:
        """Close the on-demand tunnel now; returns once ssh has ended (waiting at
        most a few seconds). Closing a closed tunnel does nothing.

        Raises TunnelRequestRefused in ``always`` mode."""
        if self.config.mode == "always":
            raise TunnelRequestRefused(
                "the tunnel is always on (mode = \"always\"); it cannot be closed by request")
        if self._open_until is not None:
            self._open_until = self._open_until_wall = None
            self._last_close = "request"
            log.info("tunnel: close requested")
            self._window.set()
            self._touch()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.watch(lambda h: h["state"] in ("closed", "stopped"))
        except TimeoutError:
            log.warning("tunnel: ssh has not ended %gs after the close request", CLOSE_WAIT)

    def open_remaining(self) -> float | None:
        """Seconds left in the on-demand window, None when closed (or always on)."""
        if self._open_until is None:
            return None
        left = self._open_until - asyncio.get_running_loop().time()
        return left if left > 0 else None

    # ------------------------------------------------------------ status

    def health(self) -> dict[str, Any]:
        """State, since when, last error and counters (JSON-serialisable)."""
        now = time.time()
        retry = None
        if self._state == "backoff" and self._retry_at is not None:
            retry = round(max(0.0, self._retry_at - time.monotonic()), 3)
        remaining = None
        if self._open_until_wall is not None:
            remaining = round(max(0.0, self._open_until_wall - now), 3)
        return {
            "mode": self.config.mode,
            "transport": self.config.transport,
            "bastion": self.config.bastion,
            "forwards": [str(f) for f in self.config.forwards],
            "state": self._state,
            "up": self._state == "up",
            "since": self._since,
            "since_iso": _iso(self._since),
            "state_age_s": round(now - self._since, 3),
            "last_error": self._last_error,
            "last_error_reason": self._last_error_reason,
            "last_error_at": self._last_error_at,
            "starts": self._starts,
            "ups": self._ups,
            "failures": self._failures,
            "connections": self._connections,
            "pid": self._pid,
            "next_retry_in_s": retry,
            "open_until": self._open_until_wall,
            "open_remaining_s": remaining,
            "last_close": self._last_close,
        }

    async def watch(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait until ``health()`` satisfies ``predicate`` and return it (bound the
        wait with ``asyncio.timeout``); re-checked at every change."""
        return await self._changes.until(self.health, predicate)

    def _touch(self) -> None:
        self._changes.notify()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._since = time.time()
        self._touch()

    # ------------------------------------------------------------ run

    async def run(self) -> NoReturn:
        """Run until cancelled. Expected faults (ssh failing) are retried with
        backoff and never raised."""
        try:
            if self.config.mode == "always":
                await self._keep_up()
            else:
                while True:
                    self._set_state("closed")
                    await self._wait_opened()
                    await self._open_window()
        finally:
            self._pid = None
            self._retry_at = None
            self._set_state("stopped")

    def _is_open(self) -> bool:
        return self.open_remaining() is not None

    async def _wait_opened(self) -> None:
        while not self._is_open():
            self._window.clear()
            await self._window.wait()

    async def _open_window(self) -> None:
        """Keep ssh running until the window ends (TTL or close())."""
        async with asyncio.TaskGroup() as tg:
            keeper = tg.create_task(self._keep_up())
            await self._window_end()
            keeper.cancel()
        self._backoff.reset()

    async def _window_end(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._window.clear()
            if self._open_until is None:
                return  # close() said why
            left = self._open_until - loop.time()
            if left <= 0:
                self._open_until = self._open_until_wall = None
                self._last_close = "ttl"
                log.info("tunnel: closing: its time to live ended")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._window.wait()

    async def _keep_up(self) -> NoReturn:
        """Run ssh again and again, with backoff between runs."""
        while True:
            self._retry_at = None
            self._up_at = None
            try:
                await self._run_ssh()
            except TunnelError as err:
                self._note_error(err)
            if (self._up_at is not None
                    and time.monotonic() - self._up_at >= self.config.backoff_max):
                self._backoff.reset()
            delay = self._backoff.next_delay()
            self._retry_at = time.monotonic() + delay
            self._set_state("backoff")
            log.warning("tunnel: %s; restarting ssh in %.1fs", self._last_error, delay)
            await asyncio.sleep(delay)

    def _note_error(self, err: TunnelError) -> None:
        self._failures += 1
        self._last_error = str(err)
        self._last_error_reason = err.reason
        self._last_error_at = time.time()
        self._touch()

    def _prepare(self) -> None:
        """Blocking checks and the pinned known_hosts file (run in a thread).
        Raises TunnelError naming the file and what is wrong."""
        cfg = self.config
        if shutil.which(cfg.ssh) is None:
            raise TunnelError(f"{SUMMARIES[reasons.SSH_NOT_STARTED]} ({cfg.ssh} not found; "
                              "install openssh-client)", reason=reasons.SSH_NOT_STARTED)
        try:
            mode = cfg.key_file.stat().st_mode
            with cfg.key_file.open("rb"):
                pass
        except FileNotFoundError:
            raise TunnelError(f"{SUMMARIES[reasons.KEY_MISSING]} ({cfg.key_file} not found; "
                              "'gatewayctl identity init' makes it)",
                              reason=reasons.KEY_MISSING) from None
        except OSError as err:
            raise TunnelError(f"{SUMMARIES[reasons.KEY_MISSING]} ({cfg.key_file}: "
                              f"{err.strerror})", reason=reasons.KEY_MISSING) from None
        if mode & 0o077:
            raise TunnelError(f"{SUMMARIES[reasons.KEY_UNPROTECTED]} ({cfg.key_file} has mode "
                              f"{mode & 0o777:04o}; expected 0600)",
                              reason=reasons.KEY_UNPROTECTED)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.known_hosts.with_name(self.known_hosts.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(known_hosts_text(cfg))
        os.replace(tmp, self.known_hosts)

    async def _run_ssh(self) -> NoReturn:
        """One ssh run, from start to exit; raises TunnelError with the reason."""
        self._set_state("connecting")
        try:
            await asyncio.to_thread(self._prepare)
            argv = ssh_argv(self.config, known_hosts=self.known_hosts, python=self._python,
                            prefix=self._prefix)
        except OSError as err:
            raise TunnelError(f"{SUMMARIES[reasons.SSH_NOT_STARTED]} (known_hosts file "
                              f"{self.known_hosts}: {err.strerror})",
                              reason=reasons.SSH_NOT_STARTED) from None
        except ValueError as err:
            raise TunnelError(f"{SUMMARIES[reasons.SSH_NOT_STARTED]} ({err})",
                              reason=reasons.SSH_NOT_STARTED) from None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=ssh_environment(os.environ),
                limit=MAX_LINE)
        except OSError as err:
            raise TunnelError(f"{SUMMARIES[reasons.SSH_NOT_STARTED]} ({argv[0]}: "
                              f"{err.strerror})", reason=reasons.SSH_NOT_STARTED) from None
        self._starts += 1
        self._pid = proc.pid
        self._touch()
        log.info("tunnel: ssh started (pid %d) to %s", proc.pid, self.config.bastion)
        parser = SshLog()
        try:
            await self._read_log(proc, parser)
            returncode = await proc.wait()
        finally:
            self._pid = None
            if proc.returncode is None:
                await _terminate(proc)
        reason, message = parser.failure(returncode)
        raise TunnelError(message, reason=reason)

    async def _read_log(self, proc: asyncio.subprocess.Process, parser: SshLog) -> None:
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:  # a line longer than MAX_LINE: skipped, not fatal
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self._on_event(parser.feed(line), line)

    def _on_event(self, event: Event | None, line: str) -> None:
        if isinstance(event, TunnelUp):
            self._ups += 1
            self._up_at = time.monotonic()
            self._set_state("up")
            log.info("tunnel: up to %s: %s", self.config.bastion,
                     ", ".join(str(f) for f in self.config.forwards))
        elif isinstance(event, ConnectionForwarded):
            self._connections += 1
            self._touch()
            log.info("tunnel: connection through %s from %s", event.listen, event.originator)
        elif isinstance(event, ForwardUp):
            log.debug("tunnel: the bastion listens on %s", event.listen)
        elif isinstance(event, Authenticated):
            log.debug("tunnel: authenticated to %s", self.config.bastion)
        elif isinstance(event, Problem) or (line and not line.startswith("debug")):
            log.debug("tunnel: ssh: %s", line)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if ssh has not ended within TERMINATE_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(TERMINATE_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
