"""Prometheus text exposition of the daemon's status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gatewayd.commands.metrics import commands_metrics
from gatewayd.local.metrics import local_metrics
from gatewayd.tunnel.metrics import tunnel_metrics


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def add(self, name: str, kind: str, help_text: str, value: float | int | bool | None,
            **labels: str) -> None:
        if value is None:
            return
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        sample = f"{name}{{{label_text}}}" if label_text else name
        self.lines.append(f"{sample} {float(value):g}" if isinstance(value, float)
                          else f"{sample} {int(value)}")


def _components(status: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    comps: dict[str, dict[str, Any]] = status.get("components", {})
    return comps.items()


def render(status: dict[str, Any]) -> str:
    """Render the status dictionary (as served by the control socket) as metrics."""
    m = _Exposition()
    m.add("gatewayd_up", "gauge", "1 while the daemon runs.", 1)
    m.add("gatewayd_uptime_seconds", "gauge", "Seconds since the daemon started.",
          float(status.get("uptime_s", 0.0)))
    m.add("gatewayd_reloads_total", "counter", "Configuration reloads applied.",
          status.get("reloads", 0))
    m.add("gatewayd_reload_failures_total", "counter", "Configuration reloads refused.",
          status.get("reload_failures", 0))
    for name, comp in _components(status):
        m.add("gatewayd_component_running", "gauge", "1 when the component is running.",
              comp["state"] == "running", component=name)
        m.add("gatewayd_component_restarts_total", "counter", "Restarts after a failure.",
              comp["restarts"], component=name)
        health = comp.get("health", {})
        if name == "tunnel":
            tunnel_metrics(m.add, health)
        if name in ("local-mqtt", "local-coap"):
            local_metrics(m.add, name, health)
        if name.startswith("device:"):
            device = name.split(":", 1)[1]
            m.add("gatewayd_device_readings_total", "counter", "Readings produced by a device.",
                  health.get("readings"), device=device)
            m.add("gatewayd_device_last_reading_age_seconds", "gauge",
                  "Seconds since the device last produced a reading.",
                  health.get("last_reading_age_s"), device=device)
        if name.startswith("uplink:"):
            uplink = name.split(":", 1)[1]
            m.add("gatewayd_uplink_connected", "gauge", "1 while connected to the broker.",
                  bool(health.get("connected")), uplink=uplink)
            m.add("gatewayd_uplink_acked_readings_total", "counter",
                  "Readings acknowledged by the broker.", health.get("acked_readings"),
                  uplink=uplink)
            m.add("gatewayd_uplink_acked_readings_per_second", "gauge",
                  "Readings acknowledged per second over the last 10 s.",
                  health.get("acked_per_s"), uplink=uplink)
            m.add("gatewayd_uplink_published_batches_total", "counter",
                  "Batches published.", health.get("published_batches"), uplink=uplink)
            m.add("gatewayd_uplink_connects_total", "counter", "Successful connections.",
                  health.get("connects"), uplink=uplink)
            m.add("gatewayd_uplink_last_ack_age_seconds", "gauge",
                  "Seconds since the broker last acknowledged a batch.",
                  health.get("last_ack_age_s"), uplink=uplink)
    buf = status.get("buffer") or {}
    m.add("gatewayd_buffer_rows", "gauge", "Readings held in the buffer.", buf.get("rows"))
    m.add("gatewayd_buffer_used_bytes", "gauge", "Bytes used by the buffer.",
          buf.get("used_bytes"))
    m.add("gatewayd_buffer_max_bytes", "gauge", "The buffer's size limit.", buf.get("max_size"))
    m.add("gatewayd_buffer_effective_max_bytes", "gauge",
          "The size limit in force: less than the configured one when the disk has less room.",
          buf.get("effective_max_size"))
    m.add("gatewayd_buffer_committed_total", "counter", "Readings committed to disk.",
          buf.get("committed_total"))
    m.add("gatewayd_buffer_alarm", "gauge", "1 while the buffer reports a storage alarm.",
          bool(buf.get("alarm")))
    for reason, per_device in (buf.get("drops") or {}).items():
        for device, count in per_device.items():
            m.add("gatewayd_buffer_dropped_total", "counter", "Readings dropped.", count,
                  device=device, reason=reason)
    for uplink, u in (buf.get("uplinks") or {}).items():
        m.add("gatewayd_uplink_backlog_rows", "gauge", "Readings waiting for this uplink.",
              u.get("backlog_rows"), uplink=uplink)
        m.add("gatewayd_uplink_backlog_bytes", "gauge",
              "Estimated bytes of the readings waiting for this uplink.",
              u.get("backlog_bytes"), uplink=uplink)
        m.add("gatewayd_uplink_backlog_oldest_age_seconds", "gauge",
              "Age of the oldest reading waiting for this uplink.", u.get("oldest_age_s"),
              uplink=uplink)
    commands_metrics(m.add, status)
    return "\n".join(m.lines) + "\n"
