"""Run the real daemon as a subprocess, with a NOTIFY_SOCKET bound by the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable


def gatewayctl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run ``gatewayctl`` (from the same environment) and capture its output."""
    return subprocess.run([PYTHON, "-m", "gatewayd.cli.ctl", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@dataclass
class NotifyListener:
    """Receives sd_notify datagrams on a socket of the test's own."""

    path: Path
    messages: list[dict[str, str]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.messages.append(fields)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 15.0,
                 start: int = 0) -> tuple[int, dict[str, str]]:
        """The index and fields of the first message from ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if predicate(self.messages[i]):
                        return i, self.messages[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching notify message in {timeout}s; "
                                         f"got {self.messages}")
                self._cond.wait(left)

    def close(self) -> None:
        self._running = False
        self.sock.close()


class DaemonProcess:
    """``gatewayd run`` in a temporary directory, with its config written by the test."""

    def __init__(self, root: Path, config_text: str, *, watchdog_usec: int | None = None,
                 extra_env: dict[str, str] | None = None,
                 wrapper: Callable[[list[str]], list[str]] | None = None) -> None:
        """``wrapper`` turns the daemon's argv into the one to run (e.g. inside unshare)."""
        self.root = root
        self.config_path = root / "etc" / "gatewayd.toml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        # Unix socket paths are limited to 107 bytes: keep the runtime dir short.
        self.runtime = Path(tempfile.mkdtemp(prefix="gwrun-"))
        self.write_config(config_text)
        self.notify = NotifyListener(self.runtime / "notify.sock")
        self.watchdog_usec = watchdog_usec
        self.extra_env = extra_env or {}
        self.wrapper = wrapper
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = root / "daemon.log"

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    @property
    def socket(self) -> Path:
        return self.runtime / "control.sock"

    def start(self) -> None:
        env = dict(os.environ)
        env.update({
            "NOTIFY_SOCKET": str(self.notify.path),
            "STATE_DIRECTORY": str(self.state),
            "RUNTIME_DIRECTORY": str(self.runtime),
            "PYTHONUNBUFFERED": "1",
        })
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        env.update(self.extra_env)
        self._log = self.log_path.open("a")
        argv = [PYTHON, "-m", "gatewayd", "run", "--config", str(self.config_path),
                "--log-level", "debug"]
        self.proc = subprocess.Popen(self.wrapper(argv) if self.wrapper else argv,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     text=True)

    def wait_ready(self, timeout: float = 20.0, start: int = 0) -> int:
        """The index of the READY=1 message; fails at once (with the log) if the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                index, _ = self.notify.wait_for(lambda m: m.get("READY") == "1",
                                                min(0.5, max(0.01, deadline - time.monotonic())),
                                                start)
                return index
            except AssertionError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"gatewayd exited with {self.proc.returncode} before "
                                         f"READY:\n{self.log_text()[-3000:]}") from None
                if time.monotonic() >= deadline:
                    raise

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return gatewayctl(*args, "--socket", str(self.socket))

    def status(self) -> dict[str, Any]:
        out = self.ctl("status", "--json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 20.0) -> dict[str, Any]:
        """Ask the daemon until ``predicate(status)`` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"status condition not met in {timeout}s: "
                                     f"{json.dumps(st, indent=1)[:4000]}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def close(self) -> None:
        self.stop()
        self.notify.close()
        shutil.rmtree(self.runtime, ignore_errors=True)
