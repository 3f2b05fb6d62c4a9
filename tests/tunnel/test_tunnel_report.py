"""How the tunnel's health shows in metrics and in gatewayctl's text (pure)."""

from __future__ import annotations

from typing import Any

from gatewayd.cli.tunnel import describe, status_line
from gatewayd.metrics import render
from gatewayd.tunnel.runner import human_duration

HEALTH: dict[str, Any] = {
    "mode": "on-demand", "transport": "tcp", "bastion": "gw@bastion.example.net:22",
    "forwards": ["127.0.0.1:22001 -> 127.0.0.1:22"], "state": "backoff", "up": False,
    "since": 1_700_000_000.25, "since_iso": "2023-11-14T22:13:20Z", "state_age_s": 4.0,
    "last_error": "the bastion refused the connection (ssh: connect to host bastion.example"
                  ".net port 22: Connection refused)",
    "last_error_reason": "connect_refused", "last_error_at": 1_700_000_000.0,
    "starts": 3, "ups": 1, "failures": 2, "connections": 5, "pid": None,
    "next_retry_in_s": 1.5, "open_until": 1_700_001_800.0, "open_remaining_s": 1796.0,
    "last_close": None,
}


def test_metrics() -> None:
    text = render({"uptime_s": 1.0, "components": {"tunnel": {
        "state": "running", "restarts": 0, "health": HEALTH}}})
    lines = [ln for ln in text.splitlines() if ln.startswith("gatewayd_tunnel")]
    assert lines == [
        "gatewayd_tunnel_up 0",
        'gatewayd_tunnel_state{state="stopped"} 0',
        'gatewayd_tunnel_state{state="closed"} 0',
        'gatewayd_tunnel_state{state="connecting"} 0',
        'gatewayd_tunnel_state{state="up"} 0',
        'gatewayd_tunnel_state{state="backoff"} 1',
        "gatewayd_tunnel_state_since_timestamp_seconds 1700000000",
        "gatewayd_tunnel_ssh_starts_total 3",
        "gatewayd_tunnel_ups_total 1",
        "gatewayd_tunnel_failures_total 2",
        "gatewayd_tunnel_connections_total 5",
        "gatewayd_tunnel_last_error_timestamp_seconds 1700000000",
        'gatewayd_tunnel_last_error_info{reason="connect_refused"} 1',
        "gatewayd_tunnel_open_remaining_seconds 1796",
    ]
    assert "# TYPE gatewayd_tunnel_state gauge" in text


def test_status_line_and_description() -> None:
    assert status_line(HEALTH) == (
        "tunnel: backoff since 2023-11-14 22:13:20Z (4s), on-demand, gw@bastion.example.net:22"
        ", closes in 30m, last error 2023-11-14 22:13:20Z: the bastion refused the connection "
        "(ssh: connect to host bastion.example.net port 22: Connection refused)")
    assert describe(HEALTH).splitlines() == [
        "state:      backoff since 2023-11-14 22:13:20Z (4s)",
        "mode:       on-demand, transport tcp",
        "bastion:    gw@bastion.example.net:22",
        "forwards:   127.0.0.1:22001 -> 127.0.0.1:22",
        "open until: 2023-11-14 22:43:20Z (30m left)",
        "counters:   ssh starts 3, up 1, failures 2, connections 5",
        "next try:   in 1.5s",
        "last error: 2023-11-14 22:13:20Z [connect_refused] the bastion refused the connection "
        "(ssh: connect to host bastion.example.net port 22: Connection refused)",
    ]


def test_human_duration() -> None:
    assert [human_duration(s) for s in (7200, 86400, 90, 120, 0.5, 3601)] == \
        ["2h", "1d", "90s", "2m", "500ms", "3601s"]
    assert human_duration(float("inf")) == "inf"
