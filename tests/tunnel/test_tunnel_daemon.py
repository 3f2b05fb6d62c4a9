"""The tunnel through the running daemon (`gatewayd run` as a subprocess) and
`gatewayctl tunnel open|close|status`, against the real sshd."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

from gatewayd.control import request
from tests.peers.sshd import make_key, wait_gone
from tests.support.daemon import DaemonProcess
from tests.tunnel.conftest import Bastion
from tests.tunnel.tunnel_support import EchoServer, echo_through, refused

BASE = """
[gateway]
id = "gw-test"
"""

TUNNEL = """
[tunnel]
host = "127.0.0.1"
port = {port}
user = "{user}"
host_key = "[127.0.0.1]:{port} {host_key}"
forwards = [{{ remote = "{remote}", local = "127.0.0.1:{local}" }}]
mode = "{mode}"
max_ttl = "2h"
backoff_initial = "100ms"
backoff_max = "1s"
server_alive_interval = "{alive}"
"""


def tunnel_toml(bastion: Bastion, echo: EchoServer, *, mode: str, alive: str = "15s") -> str:
    return TUNNEL.format(port=bastion.sshd.port, user=bastion.sshd.user,
                         host_key=bastion.sshd.host_key, remote=bastion.forward_remote,
                         local=echo.port, mode=mode, alive=alive)


def authorize_daemon_key(d: DaemonProcess, bastion: Bastion) -> None:
    """The key where `gatewayctl identity init` puts it (the [tunnel] default)."""
    public = make_key(d.state / "identity" / "ssh_ed25519", "gw-test")
    bastion.sshd.authorize(public, listen=[bastion.forward_remote])


def tunnel_health(st: dict[str, Any]) -> dict[str, Any]:
    health: dict[str, Any] = st["components"]["tunnel"]["health"]
    return health


def status(d: DaemonProcess) -> dict[str, Any]:
    """The daemon's status straight from the control socket (no gatewayctl process)."""
    return request(d.socket, "status")


def wait_status(d: DaemonProcess, predicate: Callable[[dict[str, Any]], bool],
                timeout: float = 30.0) -> dict[str, Any]:
    """Ask the daemon until ``predicate(status)`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(d)
        if predicate(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"status condition not met in {timeout}s: "
                                 f"{json.dumps(st, indent=1)[:4000]}")
        time.sleep(0.1)


def test_gatewayctl_tunnel_open_status_close_and_reload(
        daemon_factory: type[DaemonProcess], bastion: Bastion, echo: EchoServer) -> None:
    d = daemon_factory(BASE)
    authorize_daemon_key(d, bastion)
    d.start()
    d.wait_ready()

    out = d.ctl("tunnel", "status")
    assert out.returncode == 1
    assert "no tunnel is configured" in out.stderr

    # Adding [tunnel] by reload: on demand, so it stays closed.
    d.write_config(BASE + tunnel_toml(bastion, echo, mode="on-demand"))
    assert d.ctl("reload").returncode == 0
    wait_status(d, lambda s: "tunnel" in s["components"]
                  and tunnel_health(s)["state"] == "closed")
    out = d.ctl("tunnel", "status", "--json")
    assert out.returncode == 0, out.stderr
    h = json.loads(out.stdout)
    assert (h["mode"], h["state"], h["starts"], h["pid"]) == ("on-demand", "closed", 0, None)

    out = d.ctl("tunnel", "open", "--ttl", "30m")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("tunnel open until ")
    st = wait_status(d, lambda s: tunnel_health(s)["up"])
    assert 0 < tunnel_health(st)["open_remaining_s"] <= 1800
    assert echo_through(bastion.remote_port, b"through the daemon") == b"through the daemon"
    st = wait_status(d, lambda s: tunnel_health(s)["connections"] == 1)
    pid = tunnel_health(st)["pid"]

    text = d.ctl("status").stdout
    assert "tunnel: up since " in text and ", on-demand, " in text and "closes in " in text
    out = d.ctl("tunnel", "status")
    assert out.returncode == 0
    assert out.stdout.startswith("state:      up since ")
    assert f"forwards:   {bastion.forward_remote} -> 127.0.0.1:{echo.port}" in out.stdout
    metrics = d.ctl("metrics").stdout
    for sample in ("gatewayd_tunnel_up 1", 'gatewayd_tunnel_state{state="up"} 1',
                   'gatewayd_tunnel_state{state="closed"} 0',
                   "gatewayd_tunnel_connections_total 1", "gatewayd_tunnel_ups_total 1",
                   "gatewayd_tunnel_failures_total 0"):
        assert sample in metrics.splitlines(), sample
    assert any(line.startswith("gatewayd_tunnel_state_since_timestamp_seconds ")
               for line in metrics.splitlines())

    # Refused requests change nothing.
    out = d.ctl("tunnel", "open", "--ttl", "3h")
    assert out.returncode == 1 and "max_ttl (2h)" in out.stderr
    out = d.ctl("tunnel", "open", "--ttl", "soon")
    assert out.returncode == 2 and "invalid duration" in out.stderr
    assert tunnel_health(status(d))["pid"] == pid

    # A changed [tunnel] restarts ssh; the open window keeps the time it had left.
    d.write_config(BASE + tunnel_toml(bastion, echo, mode="on-demand", alive="20s"))
    assert d.ctl("reload").returncode == 0
    st = wait_status(d, lambda s: tunnel_health(s)["up"] and tunnel_health(s)["pid"] != pid)
    assert 0 < tunnel_health(st)["open_remaining_s"] <= 1800
    assert st["last_reload"]["restarted"] == ["tunnel"]
    pid = tunnel_health(st)["pid"]

    out = d.ctl("tunnel", "close")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "tunnel closed; state closed\n"
    assert wait_gone(pid, 10)
    bastion.sshd.wait_no_sessions()
    assert refused(bastion.remote_port)
    h = tunnel_health(status(d))
    assert (h["state"], h["last_close"], h["open_until"]) == ("closed", "request", None)
    assert "gatewayd_tunnel_up 0" in d.ctl("metrics").stdout.splitlines()


def test_always_on_tunnel_and_daemon_sigkill_ends_ssh(
        daemon_factory: type[DaemonProcess], bastion: Bastion, echo: EchoServer) -> None:
    d = daemon_factory(BASE + tunnel_toml(bastion, echo, mode="always"))
    authorize_daemon_key(d, bastion)
    d.start()
    d.wait_ready()
    st = wait_status(d, lambda s: tunnel_health(s)["up"])
    pid = tunnel_health(st)["pid"]
    assert echo_through(bastion.remote_port, b"always") == b"always"
    # systemd's one-line STATUS= names the tunnel's state too.
    _, msg = d.notify.wait_for(lambda m: m.get("STATUS", "").endswith(", tunnel up"), 30)
    assert msg["STATUS"].startswith("devices ")

    out = d.ctl("tunnel", "close")
    assert out.returncode == 1 and "always on" in out.stderr
    out = d.ctl("tunnel", "open")
    assert out.returncode == 0 and "always on" in out.stdout
    assert tunnel_health(status(d))["pid"] == pid

    # ssh dies with the daemon, even on SIGKILL: no orphan keeps the forward.
    d.kill9()
    assert wait_gone(pid, 10)
    bastion.sshd.wait_no_sessions()
    assert refused(bastion.remote_port)

    # And SIGTERM stops it cleanly.
    d.start()
    d.wait_ready(start=len(d.notify.messages))
    st = wait_status(d, lambda s: tunnel_health(s)["up"])
    pid = tunnel_health(st)["pid"]
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert wait_gone(pid, 10)
