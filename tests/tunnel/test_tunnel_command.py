"""The ssh command line and the pinned known_hosts file (pure)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gatewayd.tunnel.command import (
    forward_spec,
    known_hosts_text,
    proxy_command,
    ssh_argv,
    ssh_environment,
    ssh_value,
)
from gatewayd.tunnel.config import Forward
from tests.tunnel.test_tunnel_config import ECDSA, ED25519, MINIMAL, with_
from tests.tunnel.tunnel_support import tunnel_config

KNOWN = Path("/run/gatewayd/tunnel/known_hosts")


def test_the_whole_tcp_command_line() -> None:
    config = tunnel_config(with_(
        port=2222, key_file="/var/lib/gatewayd/identity/ssh_ed25519",
        forwards=[{"remote": "127.0.0.1:22001", "local": "127.0.0.1:22"},
                  {"remote": "[::1]:8443", "local": "192.168.1.10:443"}]))
    argv = ssh_argv(config, known_hosts=KNOWN, python="/usr/bin/python3",
                    prefix=("/usr/bin/setpriv", "--pdeathsig", "TERM", "--"))
    assert argv == [
        "/usr/bin/setpriv", "--pdeathsig", "TERM", "--",
        "/usr/bin/ssh", "-F", "none", "-N", "-T",
        "-o", "LogLevel=DEBUG1",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        "-o", "ConnectTimeout=15",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/run/gatewayd/tunnel/known_hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "HostKeyAlias=gatewayd-bastion",
        "-o", "CheckHostIP=no",
        "-o", "UpdateHostKeys=no",
        "-o", "VerifyHostKeyDNS=no",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityFile=/var/lib/gatewayd/identity/ssh_ed25519",
        "-o", "IdentityAgent=none",
        "-o", "PubkeyAuthentication=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "HostbasedAuthentication=no",
        "-o", "GSSAPIAuthentication=no",
        "-o", "PreferredAuthentications=publickey",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ForwardX11Trusted=no",
        "-o", "PermitLocalCommand=no",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "Tunnel=no",
        "-o", "RequestTTY=no",
        "-o", "Port=2222",
        "-o", "User=gw-0001",
        "-R", "127.0.0.1:22001:127.0.0.1:22",
        "-R", "[::1]:8443:192.168.1.10:443",
        "bastion.example.net",
    ]
    # Forwards come from the allow-list only: no -L, -D or -A anywhere.
    assert not {"-L", "-D", "-A", "-X", "-Y", "-W"} & set(argv)


def test_the_websocket_proxy_command() -> None:
    config = tunnel_config(with_(transport="websocket", ca_file="/etc/gw ca/relay.pem",
                                 url="wss://relay.example.net/ssh?gw=a%20b"))
    argv = ssh_argv(config, known_hosts=KNOWN, python="/usr/bin/python3")
    assert argv[0] == "/usr/bin/ssh"
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    proxy = [o for o in options if o.startswith("ProxyCommand=")]
    assert proxy == ["ProxyCommand=/usr/bin/python3 -m gatewayd.tunnel.wsproxy "
                     "--connect-timeout 15 --ca-file '/etc/gw ca/relay.pem' "
                     "'wss://relay.example.net/ssh?gw=a%%20b'"]
    # Undo ssh's %-expansion and the shell's quoting: the original arguments come back.
    command = proxy[0].split("=", 1)[1].replace("%%", "%")
    assert shlex.split(command) == [
        "/usr/bin/python3", "-m", "gatewayd.tunnel.wsproxy", "--connect-timeout", "15",
        "--ca-file", "/etc/gw ca/relay.pem", "wss://relay.example.net/ssh?gw=a%20b"]
    assert proxy_command(tunnel_config(with_(transport="websocket", url="ws://r/")),
                         python="py") == "py -m gatewayd.tunnel.wsproxy --connect-timeout 15 ws://r/"


def test_known_hosts_pins_the_configured_keys_under_one_alias() -> None:
    config = tunnel_config(with_(host_key=[f"[b]:22 ssh-ed25519 {ED25519} c",
                                           f"ecdsa-sha2-nistp256 {ECDSA}"]))
    assert known_hosts_text(config) == (f"gatewayd-bastion ssh-ed25519 {ED25519}\n"
                                        f"gatewayd-bastion ecdsa-sha2-nistp256 {ECDSA}\n")


def test_paths_are_escaped_for_ssh() -> None:
    assert ssh_value("/var/lib/gw/key") == "/var/lib/gw/key"
    assert ssh_value("/var/lib/my gw/key") == '"/var/lib/my gw/key"'
    assert ssh_value("/var/lib/100%/key") == "/var/lib/100%%/key"
    with pytest.raises(ValueError, match="double quote"):
        ssh_value('/a"b')
    config = tunnel_config(with_(key_file="/var/lib/my gw/key"))
    argv = ssh_argv(config, known_hosts=Path("/run/g w/kh"), python="py")
    assert 'IdentityFile="/var/lib/my gw/key"' in argv
    assert 'UserKnownHostsFile="/run/g w/kh"' in argv


def test_forward_spec_brackets_ipv6() -> None:
    assert forward_spec(Forward("127.0.0.1", 22001, "localhost", 22)) == \
        "127.0.0.1:22001:localhost:22"
    assert forward_spec(Forward("::1", 1, "fe80::1", 2)) == "[::1]:1:[fe80::1]:2"


def test_ssh_environment() -> None:
    env = ssh_environment({"PATH": "/usr/bin", "SHELL": "/usr/sbin/nologin",
                           "SSH_AUTH_SOCK": "/tmp/agent", "DISPLAY": ":0", "LANG": "C.UTF-8"})
    assert env == {"PATH": "/usr/bin", "SHELL": "/bin/sh", "LANG": "C.UTF-8"}


def test_minimal_table_has_no_proxy() -> None:
    argv = ssh_argv(tunnel_config(MINIMAL), known_hosts=KNOWN, python="py")
    assert not any(a.startswith("ProxyCommand") for a in argv)
