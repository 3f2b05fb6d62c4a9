"""The ssh command line and the pinned ``known_hosts`` file, built from the config (pure).

ssh reads no configuration file (``-F none``: neither ``~/.ssh/config`` nor
``/etc/ssh/ssh_config`` can add a forward, an agent or a proxy); every option
it runs with is on this command line:

- key-only, non-interactive: ``BatchMode=yes``, public key authentication only,
  ``IdentitiesOnly=yes`` with the gateway key as the one ``IdentityFile``, no agent;
- the bastion's host key pinned: ``StrictHostKeyChecking=yes`` against the file
  gatewayd writes (``UserKnownHostsFile``) and nothing else
  (``GlobalKnownHostsFile=/dev/null``), looked up under :data:`HOST_KEY_ALIAS`
  whatever the transport, never updated by ssh;
- no agent, X11 or local forwarding, no control master, no local command;
- one ``-R`` per allowed forward and no other forward; ``ExitOnForwardFailure=yes``
  so that a forward the bastion refuses ends the attempt;
- ``ServerAliveInterval``/``ServerAliveCountMax``: a dead path is noticed;
- ``LogLevel=DEBUG1``: ssh's confirmation of each forward is how gatewayd knows the
  tunnel is up (see :mod:`gatewayd.tunnel.sshlog`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from gatewayd.tunnel.config import Forward, TunnelConfig

HOST_KEY_ALIAS = "gatewayd-bastion"
WSPROXY_MODULE = "gatewayd.tunnel.wsproxy"

# Environment variables the ssh child must not inherit: an agent or a display
# would be unused anyway (-F none, no forwarding), but never offered.
_DROPPED_ENV = ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "DISPLAY", "XAUTHORITY", "SSH_ASKPASS",
                "SSH_ASKPASS_REQUIRE")


def known_hosts_text(config: TunnelConfig) -> str:
    """The content of the pinned ``known_hosts`` file: the configured keys only."""
    return "".join(f"{HOST_KEY_ALIAS} {key}\n" for key in config.host_keys)


def ssh_value(text: str) -> str:
    """``text`` as the value of an ssh ``-o`` option that takes a path: ``%`` escaped
    (ssh expands ``%`` tokens there), double-quoted if it holds whitespace.

    Raises ValueError on a double quote or a control character."""
    if any(c == '"' or ord(c) < 32 for c in text):
        raise ValueError(f"path {text!r} contains a double quote or a control character")
    text = text.replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def forward_spec(forward: Forward) -> str:
    """The argument of ``-R``: ``bind:port:host:hostport``, IPv6 addresses bracketed."""
    def part(host: str) -> str:
        return f"[{host}]" if ":" in host else host

    return (f"{part(forward.remote_host)}:{forward.remote_port}:"
            f"{part(forward.local_host)}:{forward.local_port}")


def proxy_command(config: TunnelConfig, *, python: str) -> str:
    """The ``ProxyCommand`` that carries SSH over the websocket relay.

    ssh runs it with ``$SHELL -c``; every argument is shell-quoted, and ``%`` is
    escaped because ssh expands ``%`` tokens in it."""
    if config.url is None:
        raise ValueError("the websocket transport needs a url")
    argv = [python, "-m", WSPROXY_MODULE, "--connect-timeout", str(config.connect_timeout)]
    if config.ca_file is not None:
        argv += ["--ca-file", str(config.ca_file)]
    argv.append(config.url)
    # ssh itself puts "exec " in front.
    return " ".join(shlex.quote(a) for a in argv).replace("%", "%%")


def ssh_argv(config: TunnelConfig, *, known_hosts: Path, python: str,
             prefix: Sequence[str] = ()) -> list[str]:
    """The full command line of one ssh run.

    ``known_hosts`` is where :func:`known_hosts_text` was written; ``python`` runs the
    websocket ProxyCommand; ``prefix`` goes before ssh (e.g. ``setpriv --pdeathsig``).
    Raises ValueError when a path cannot be passed to ssh safely."""
    options = [
        "LogLevel=DEBUG1",
        "BatchMode=yes",
        "ExitOnForwardFailure=yes",
        f"ServerAliveInterval={config.server_alive_interval}",
        f"ServerAliveCountMax={config.server_alive_count_max}",
        f"ConnectTimeout={config.connect_timeout}",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={ssh_value(str(known_hosts))}",
        "GlobalKnownHostsFile=/dev/null",
        f"HostKeyAlias={HOST_KEY_ALIAS}",
        "CheckHostIP=no",
        "UpdateHostKeys=no",
        "VerifyHostKeyDNS=no",
        "IdentitiesOnly=yes",
        f"IdentityFile={ssh_value(str(config.key_file))}",
        "IdentityAgent=none",
        "PubkeyAuthentication=yes",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "HostbasedAuthentication=no",
        "GSSAPIAuthentication=no",
        "PreferredAuthentications=publickey",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ForwardX11Trusted=no",
        "PermitLocalCommand=no",
        "ControlMaster=no",
        "ControlPath=none",
        "Tunnel=no",
        "RequestTTY=no",
        f"Port={config.port}",
        f"User={config.user}",
    ]
    if config.transport == "websocket":
        options.append(f"ProxyCommand={proxy_command(config, python=python)}")
    argv = [*prefix, config.ssh, "-F", "none", "-N", "-T"]
    for option in options:
        argv += ["-o", option]
    for forward in config.forwards:
        argv += ["-R", forward_spec(forward)]
    argv.append(config.host)
    return argv


def ssh_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of the ssh child: ``base`` without agent or display variables,
    and ``SHELL=/bin/sh`` for the ProxyCommand (a system user's login shell is
    often ``nologin``, which systemd puts in ``$SHELL``)."""
    env = {k: v for k, v in base.items() if k not in _DROPPED_ENV}
    env["SHELL"] = "/bin/sh"
    return env
