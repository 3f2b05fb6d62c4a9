from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.mosquitto import free_port
from tests.peers.sshd import PRIVSEP_DIR, SSHD, Sshd, make_key
from tests.tunnel.tunnel_support import EchoServer


def _sshd_usable() -> str | None:
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        return "openssh-server and openssh-client are not installed"
    if os.geteuid() != 0 and not PRIVSEP_DIR.is_dir():
        return f"sshd needs {PRIVSEP_DIR}; run as root or create it"
    return None


@dataclass
class Bastion:
    """A running sshd that lets the gateway key forward ``remote_port``."""

    sshd: Sshd
    key_file: Path  # the gateway's private key (0600); its .pub beside it
    public_key: str
    remote_port: int

    @property
    def forward_remote(self) -> str:
        return f"127.0.0.1:{self.remote_port}"

    def tunnel_table(self, local_port: int, **extra: object) -> dict[str, object]:
        """A ``[tunnel]`` table for this bastion, forwarding to ``local_port``."""
        table: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.sshd.port,
            "user": self.sshd.user,
            "host_key": f"[127.0.0.1]:{self.sshd.port} {self.sshd.host_key}",
            "key_file": str(self.key_file),
            "forwards": [{"remote": self.forward_remote, "local": f"127.0.0.1:{local_port}"}],
            "mode": "always",
            "backoff_initial": "100ms",
            "backoff_max": "1s",
            "connect_timeout": "10s",
        }
        table.update(extra)
        return table


@pytest.fixture
def gateway_key(tmp_path: Path) -> tuple[Path, str]:
    """The gateway's SSH key where `gatewayctl identity init` puts it."""
    key = tmp_path / "state" / "identity" / "ssh_ed25519"
    return key, make_key(key, "gw-test")


@pytest.fixture
def bastion(tmp_path: Path, gateway_key: tuple[Path, str]) -> Iterator[Bastion]:
    reason = _sshd_usable()
    if reason:
        pytest.skip(reason)
    sshd = Sshd(tmp_path / "bastion")
    remote_port = free_port()
    sshd.authorize(gateway_key[1], listen=[f"127.0.0.1:{remote_port}"])
    sshd.start()
    try:
        yield Bastion(sshd, gateway_key[0], gateway_key[1], remote_port)
    finally:
        sshd.stop()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server
