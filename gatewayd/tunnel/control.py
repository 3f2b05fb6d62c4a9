"""The daemon's side of the tunnel: control-socket requests and reconfiguration.

Control requests (answered on the control socket, used by ``gatewayctl tunnel``):

- ``{"cmd": "tunnel-status"}`` -> ``{"ok": true, "tunnel": health}``
- ``{"cmd": "tunnel-open", "ttl": SECONDS}`` (``ttl`` optional: ``default_ttl``)
- ``{"cmd": "tunnel-close"}``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from gatewayd.supervisor import Supervisor
from gatewayd.tunnel.config import TunnelConfig
from gatewayd.tunnel.errors import TunnelRequestRefused
from gatewayd.tunnel.runner import ReverseTunnel

log = logging.getLogger(__name__)

COMMANDS: Final = ("tunnel-status", "tunnel-open", "tunnel-close")


def make_tunnel(config: TunnelConfig | None, *, runtime_dir: Path) -> ReverseTunnel | None:
    """The daemon's tunnel (None without a ``[tunnel]`` table)."""
    return None if config is None else ReverseTunnel(config, runtime_dir=runtime_dir)


async def handle_request(tunnel: ReverseTunnel | None,
                         request: dict[str, Any]) -> dict[str, Any]:
    """Answer one ``tunnel-*`` control request.

    Raises TunnelRequestRefused (a GatewayError: the control socket answers it as
    an error) without a tunnel, on a bad TTL, or on close in ``always`` mode."""
    if tunnel is None:
        raise TunnelRequestRefused("no tunnel is configured (no [tunnel] table)")
    cmd = request.get("cmd")
    if cmd == "tunnel-open":
        ttl = request.get("ttl")
        if ttl is None:
            ttl = tunnel.config.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TunnelRequestRefused(f"tunnel ttl {ttl!r} refused; expected seconds")
        await tunnel.open(float(ttl))
    elif cmd == "tunnel-close":
        await tunnel.close()
    elif cmd != "tunnel-status":
        raise ValueError(f"unknown command {cmd!r}")
    return {"ok": True, "tunnel": tunnel.health()}


async def replace_tunnel(owner: Supervisor, running: ReverseTunnel | None,
                         config: TunnelConfig | None, *,
                         runtime_dir: Path) -> ReverseTunnel | None:
    """Apply a changed ``[tunnel]`` table: stop the running tunnel, start the new
    one. An on-demand window that is open stays open for the time it had left."""
    remaining = running.open_remaining() if running is not None else None
    if running is not None:
        await owner.stop(running.name)
    new = make_tunnel(config, runtime_dir=runtime_dir)
    if new is not None:
        owner.start(new)
        if remaining is not None and new.config.mode == "on-demand":
            await new.open(min(remaining, new.config.max_ttl))
    return new
