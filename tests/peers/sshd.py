"""A real OpenSSH server (Debian's /usr/sbin/sshd) as the tunnel's bastion, on a
free loopback port, with its own host key and ``authorized_keys``.

sshd runs in the foreground (``-D -e``) as a child of the test, with a config
of its own: no PAM, no strict modes (the test's files live in a temporary
directory), public keys only, only the current user allowed, remote forwarding
only. Readiness is sshd's own "Server listening" line, awaited with a deadline.

:meth:`Sshd.kill` is the outage: SIGKILL to the listener and to every process
it forked (the per-connection sshd processes call ``setsid``, so they are found
through /proc, by their parent). :meth:`Sshd.start` again keeps the port and
the host key.
"""

from __future__ import annotations

import os
import pwd
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.peers.mosquitto import free_port

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")


def make_key(path: Path, comment: str = "gatewayd-test") -> str:
    """An ed25519 key pair at ``path`` (private, mode 0600) and ``path.pub``;
    returns the public key line ``ssh-ed25519 AAAA... comment``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return (path.with_name(path.name + ".pub")).read_text().strip()


def descendants(pid: int) -> list[int]:
    """Every process whose chain of parents leads to ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd, not by polling) until ``pid`` has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


class Sshd:
    """One sshd; ``authorize()`` adds keys before or between starts."""

    def __init__(self, directory: Path, *, start_timeout: float = 15.0) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.start_timeout = start_timeout
        self.host_key_file = self.dir / "ssh_host_ed25519_key"
        self.host_key = " ".join(make_key(self.host_key_file, "test-bastion").split()[:2])
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text("")
        self.conf = self.dir / "sshd_config"
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.log: list[str] = []
        self._cond = threading.Condition()
        self._write_conf()

    def _write_conf(self) -> None:
        self.conf.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key_file}",
            "PidFile none",
            "UsePAM no",
            "StrictModes no",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding remote",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "GatewayPorts no",
            "LogLevel VERBOSE",
            "",
        ]))

    def authorize(self, public_key: str, *, listen: list[str]) -> None:
        """Let ``public_key`` in, restricted to remote forwards on ``listen``
        (``host:port`` each), as a bastion should."""
        permit = ",".join(f'permitlisten="{a}"' for a in listen)
        with self.authorized_keys.open("a") as f:
            f.write(f"restrict,port-forwarding,{permit} {public_key}\n")

    # ------------------------------------------------------------ process

    def start(self) -> None:
        """Start sshd and return once it listens (or raise with its log)."""
        assert self.proc is None, "already running"
        if not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        mark = len(self.log)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()
        self.wait_log(lambda line: line.startswith("Server listening on 127.0.0.1"),
                      start=mark, timeout=self.start_timeout)

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._cond:
                self.log.append(raw.decode(errors="replace").rstrip())
                self._cond.notify_all()
        with self._cond:
            self.log.append(f"<exited {proc.pid}>")
            self._cond.notify_all()

    def wait_log(self, predicate: Callable[[str], bool], *, start: int = 0,
                 timeout: float = 15.0) -> str:
        """The first log line from index ``start`` on that matches; raises on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.log[start:]:
                    if predicate(line):
                        return line
                    if self.proc is not None and line == f"<exited {self.proc.pid}>":
                        raise RuntimeError("sshd exited:\n" + "\n".join(self.log))
                start = len(self.log)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching sshd log line in {timeout}s:\n"
                                       + self.log_text())
                self._cond.wait(left)

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.log)

    def wait_no_sessions(self, timeout: float = 15.0) -> None:
        """Return once no connection process of sshd is left (their forwards are
        closed with them); raises TimeoutError."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while sessions := descendants(self.proc.pid):
            for pid in sessions:
                if not wait_gone(pid, max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"sshd connections {sessions} still open "
                                       f"after {timeout}s")

    def kill(self) -> None:
        """SIGKILL sshd and every process it forked: all connections drop at once."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Stop sshd and its connections (SIGTERM, then SIGKILL after 5 s)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        victims = [proc.pid, *descendants(proc.pid)]  # before the children are orphaned
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for pid in victims[1:]:
            if not wait_gone(pid, 5.0):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._reader is not None:
            self._reader.join(timeout=5)  # its log lines are in before any restart

    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
