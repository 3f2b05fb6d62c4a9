"""What ssh's log lines mean (pure): feed lines, get events and, at exit, the reason.

ssh runs with ``LogLevel=DEBUG1``. Three debug lines tell the tunnel's progress:

- ``debug1: remote forward success for: listen A, connect B``: one forward is up;
- ``debug1: forwarding_success: all expected forwarding replies received``: every
  forward is up (with ``ExitOnForwardFailure=yes`` a refused one ends ssh instead);
- ``debug1: client_request_forwarded_tcpip: listen H port P, originator ...``: a
  connection came through the tunnel.

Lines without the ``debug`` prefix are ssh's messages; the most telling one of an
attempt becomes the reason it failed (:meth:`SshLog.failure`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gatewayd.tunnel import errors as reasons

MAX_LINE = 300


@dataclass(frozen=True)
class Authenticated:
    """The bastion accepted the gateway key."""


@dataclass(frozen=True)
class ForwardUp:
    """The bastion listens on ``listen`` for one forward."""

    listen: str


@dataclass(frozen=True)
class TunnelUp:
    """Every forward is up."""


@dataclass(frozen=True)
class ConnectionForwarded:
    """A connection to ``listen`` on the bastion, from ``originator``, came through."""

    listen: str
    originator: str


@dataclass(frozen=True)
class Problem:
    """A line that says why ssh failed or will fail."""

    reason: str
    line: str


Event = Authenticated | ForwardUp | TunnelUp | ConnectionForwarded | Problem

SUMMARIES: Final = {
    reasons.HOST_KEY_MISMATCH: "the bastion's host key does not match the pinned host_key",
    reasons.AUTH_FAILED: "the bastion refused the gateway key",
    reasons.KEY_MISSING: "the gateway SSH key is missing or unreadable",
    reasons.KEY_UNPROTECTED: "the gateway SSH key is readable by others",
    reasons.FORWARD_FAILED: "the bastion refused a forward",
    reasons.CONNECT_REFUSED: "the bastion refused the connection",
    reasons.CONNECT_TIMEOUT: "connecting to the bastion timed out",
    reasons.NAME_NOT_RESOLVED: "the bastion's name does not resolve",
    reasons.NETWORK_UNREACHABLE: "the bastion is unreachable",
    reasons.SERVER_NOT_RESPONDING: "the bastion stopped answering keep-alives",
    reasons.CONNECTION_LOST: "the connection to the bastion was lost",
    reasons.PROXY_FAILED: "the websocket relay failed",
    reasons.SSH_NOT_STARTED: "ssh could not be started",
    reasons.EXITED: "ssh exited",
}

# (pattern, reason, priority): the highest priority seen in one attempt wins;
# among equals, the first line seen.
_PROBLEMS: Final = (
    (re.compile(r"^gatewayd-wsproxy: "), reasons.PROXY_FAILED, 95),
    (re.compile(r"no such identity: "), reasons.KEY_MISSING, 90),
    (re.compile(r"^Load key .*: "), reasons.KEY_MISSING, 90),
    (re.compile(r"UNPROTECTED PRIVATE KEY FILE|^Permissions 0\d+ for .* are too open"),
     reasons.KEY_UNPROTECTED, 90),
    (re.compile(r"has changed and you have requested strict checking|"
                r"host key is known for .* and you have requested strict checking"),
     reasons.HOST_KEY_MISMATCH, 85),
    (re.compile(r"^Host key verification failed"), reasons.HOST_KEY_MISMATCH, 80),
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED"), reasons.HOST_KEY_MISMATCH, 70),
    (re.compile(r"Permission denied \("), reasons.AUTH_FAILED, 60),
    (re.compile(r"remote port forwarding failed for listen"), reasons.FORWARD_FAILED, 60),
    (re.compile(r"Could not resolve hostname"), reasons.NAME_NOT_RESOLVED, 50),
    (re.compile(r"Connection refused"), reasons.CONNECT_REFUSED, 50),
    (re.compile(r"[Cc]onnection timed out|Operation timed out"), reasons.CONNECT_TIMEOUT, 50),
    (re.compile(r"Network is unreachable|No route to host"), reasons.NETWORK_UNREACHABLE, 50),
    (re.compile(r"^Timeout, server .* not responding"), reasons.SERVER_NOT_RESPONDING, 50),
    (re.compile(r"closed by remote host|^Connection closed by|Broken pipe|"
                r"Connection reset|^kex_exchange_identification: "),
     reasons.CONNECTION_LOST, 20),
)

_FORWARD_UP = re.compile(r"^debug1: remote forward success for: listen (\S+), connect")
_ALL_UP = re.compile(r"^debug1: forwarding_success: all expected forwarding replies received")
_FORWARDED = re.compile(
    r"^debug1: client_request_forwarded_tcpip: listen (\S+) port (\d+), "
    r"originator (\S+) port (\d+)")
_AUTHENTICATED = re.compile(r"^Authenticated to ")
# Messages that say nothing about why ssh ended.
_NOISE = re.compile(r"^(Transferred: |Bytes per second: |Authenticated to |Warning: |@+$|"
                    r"OpenSSH_)")


class SshLog:
    """Reads one ssh run's stderr, line by line."""

    def __init__(self) -> None:
        self._problem: Problem | None = None
        self._priority = -1
        self._last_message: str | None = None

    def feed(self, raw: str) -> Event | None:
        """The event this line means, if any (a Problem for a telling error line)."""
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if line.startswith("debug"):
            return self._debug_event(line)
        if not line.strip():
            return None
        if _AUTHENTICATED.match(line):
            return Authenticated()
        if not _NOISE.match(line):
            self._last_message = line
        for pattern, reason, priority in _PROBLEMS:
            if pattern.search(line):
                problem = Problem(reason, line)
                if priority > self._priority:
                    self._problem, self._priority = problem, priority
                return problem
        return None

    @staticmethod
    def _debug_event(line: str) -> Event | None:
        if _ALL_UP.match(line):
            return TunnelUp()
        m = _FORWARD_UP.match(line)
        if m:
            return ForwardUp(m.group(1))
        m = _FORWARDED.match(line)
        if m:
            return ConnectionForwarded(f"{m.group(1)}:{m.group(2)}",
                                       f"{m.group(3)}:{m.group(4)}")
        return None

    def failure(self, returncode: int | None) -> tuple[str, str]:
        """Why this run ended: a reason from :mod:`gatewayd.tunnel.errors` and a
        one-line message naming it and quoting ssh."""
        if self._problem is not None:
            reason, detail = self._problem.reason, self._problem.line
        else:
            reason = reasons.EXITED
            status = ("was killed by a signal" if returncode is not None and returncode < 0
                      else f"status {returncode}")
            detail = f"ssh exited ({status})"
            if self._last_message:
                detail += f": {self._last_message}"
        return reason, f"{SUMMARIES[reason]} ({detail.strip()})"
