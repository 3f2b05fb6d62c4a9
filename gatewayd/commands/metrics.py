"""Prometheus samples of the commands service, the uplinks' command downlink and the
gateway certificate, from the daemon's status (pure)."""

from __future__ import annotations

from typing import Any, Protocol

from .errors import FAILURES, REFUSALS


class AddSample(Protocol):
    def __call__(self, name: str, kind: str, help_text: str,
                 value: float | int | bool | None, **labels: str) -> None: ...


def commands_metrics(add: AddSample, status: dict[str, Any]) -> None:
    """Add the samples of ``status["commands"]``, ``status["identity"]`` and each
    uplink's ``health["commands"]`` through ``add``."""
    cmds = status.get("commands")
    if isinstance(cmds, dict):
        add("gatewayd_commands_total", "counter", "Commands by outcome and reason.",
            cmds.get("ok", 0), status="ok", reason="")
        reasons = cmds.get("reasons") or {}
        for status_name, names in (("refused", REFUSALS), ("failed", FAILURES)):
            counted = reasons.get(status_name) or {}
            for reason in names:  # every reason, so that a rate is defined from zero
                add("gatewayd_commands_total", "counter", "Commands by outcome and reason.",
                    counted.get(reason, 0), status=status_name, reason=reason)
        add("gatewayd_commands_trusted_keys", "gauge", "Trusted operator keys loaded.",
            cmds.get("trusted_keys"))
        add("gatewayd_commands_replay_cache_entries", "gauge",
            "Unexpired command ids remembered against replay.", cmds.get("replay_cache"))
        add("gatewayd_commands_audit_errors_total", "counter",
            "Audit records that could not be written.", cmds.get("audit_errors"))
    downlinks = {name.split(":", 1)[1]: health["commands"]
                 for name, comp in (status.get("components") or {}).items()
                 if name.startswith("uplink:")
                 and isinstance(health := comp.get("health") or {}, dict)
                 and isinstance(health.get("commands"), dict)}
    for uplink, downlink in downlinks.items():
        add("gatewayd_uplink_commands_subscribed", "gauge",
            "1 while the uplink is subscribed to its command topics.",
            bool(downlink.get("subscribed")), uplink=uplink)
    for key in ("received", "ignored", "dropped", "results_published", "results_dropped"):
        for uplink, downlink in downlinks.items():
            add(f"gatewayd_uplink_commands_{key}_total", "counter",
                f"Command messages {key.replace('_', ' ')} on this uplink.",
                downlink.get(key), uplink=uplink)
    ident = status.get("identity")
    if isinstance(ident, dict):
        add("gatewayd_identity_certificate_present", "gauge",
            "1 when the gateway certificate can be read.", bool(ident.get("present")))
        add("gatewayd_identity_certificate_expiry_days", "gauge",
            "Days until the gateway certificate expires (negative: expired).",
            ident.get("days_left"))
        if ident.get("present"):
            add("gatewayd_identity_certificate_expiry_warning", "gauge",
                "1 when the certificate expires within the warning period.",
                bool(ident.get("expiry_warning")))
