"""Prometheus samples of local ingress, from the status of its components."""

from __future__ import annotations

from typing import Any


def local_metrics(add: Any, component: str, health: dict[str, Any]) -> None:
    """Prometheus samples of one local transport (``local-mqtt`` / ``local-coap``)."""
    transport = component.removeprefix("local-")
    add("gatewayd_local_messages_total", "counter", "Local messages stored and acknowledged.",
        health.get("messages"), transport=transport)
    add("gatewayd_local_readings_total", "counter", "Readings committed from local clients.",
        health.get("readings"), transport=transport)
    add("gatewayd_local_duplicates_total", "counter",
        "Retransmitted signed messages acknowledged without storing them again.",
        health.get("duplicates"), transport=transport)
    if "connected" in health:
        add("gatewayd_local_connected_clients", "gauge", "Local clients connected.",
            health.get("connected"), transport=transport)
    for reason, count in (health.get("refused") or {}).items():
        add("gatewayd_local_refused_total", "counter",
            "Local connections, requests or messages refused, by reason.", count,
            transport=transport, reason=reason)
