"""Prometheus metrics of the tunnel, from its ``health()`` (pure)."""

from __future__ import annotations

from typing import Any, Protocol

from gatewayd.tunnel.runner import STATES


class AddSample(Protocol):
    def __call__(self, name: str, kind: str, help_text: str,
                 value: float | int | bool | None, **labels: str) -> None: ...


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def tunnel_metrics(add: AddSample, health: dict[str, Any]) -> None:
    """Add the tunnel's samples through ``add`` (the exposition's ``add``)."""
    add("gatewayd_tunnel_up", "gauge", "1 while every forward of the tunnel is up.",
        bool(health.get("up")))
    for state in STATES:
        add("gatewayd_tunnel_state", "gauge", "1 for the tunnel's current state.",
            health.get("state") == state, state=state)
    add("gatewayd_tunnel_state_since_timestamp_seconds", "gauge",
        "When the tunnel entered its current state (Unix time).", _int(health.get("since")))
    add("gatewayd_tunnel_ssh_starts_total", "counter", "ssh processes started.",
        health.get("starts"))
    add("gatewayd_tunnel_ups_total", "counter", "Times every forward came up.",
        health.get("ups"))
    add("gatewayd_tunnel_failures_total", "counter", "ssh runs that ended in failure.",
        health.get("failures"))
    add("gatewayd_tunnel_connections_total", "counter",
        "Connections that came through the tunnel.", health.get("connections"))
    add("gatewayd_tunnel_last_error_timestamp_seconds", "gauge",
        "When the tunnel last failed (Unix time).", _int(health.get("last_error_at")))
    reason = health.get("last_error_reason")
    if isinstance(reason, str):
        add("gatewayd_tunnel_last_error_info", "gauge",
            "The reason of the tunnel's last failure.", 1, reason=reason)
    add("gatewayd_tunnel_open_remaining_seconds", "gauge",
        "Seconds left before an on-demand tunnel closes.", health.get("open_remaining_s"))
