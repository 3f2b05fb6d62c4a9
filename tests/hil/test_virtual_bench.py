"""``hil/run --bench virtual``: the acceptance checks against the virtual bench (every
peer on loopback) pass, through the real daemon, and the report says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDS = ("socat", "dbus-daemon", "ssh")
EXPECTED = {"config", "start", "uplink", "tunnel", "upstream", "stop",
            *(f"readings:{d}" for d in ("plc", "meter1", "meter2", "gps", "scale", "room",
                                        "tag")),
            "write:plc/setpoint", "replug:the GNSS receiver's serial cable",
            "replug:the BLE adapter hci0 (power cycle)"}


@pytest.mark.timeout(240)
def test_every_check_passes_on_the_virtual_bench(tmp_path: Path) -> None:
    missing = [tool for tool in NEEDS if shutil.which(tool) is None]
    missing += [p for p in ("/usr/sbin/mosquitto", "/usr/sbin/sshd") if not os.access(p, os.X_OK)]
    assert not missing, f"the virtual bench needs {missing} (.ci/run installs them)"
    report = tmp_path / "report.json"
    proc = subprocess.run([str(ROOT / "hil" / "run"), "--bench", "virtual", "--quick",
                           "--json", str(report), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=220, check=False)
    print(proc.stdout, proc.stderr)  # the table, shown by pytest when something fails
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is True
    checks = {c["name"]: c for c in data["checks"]}
    assert set(checks) == EXPECTED
    assert {c["result"] for c in data["checks"]} == {"pass"}
    assert data["counts"] == {"pass": len(EXPECTED), "fail": 0, "skip": 0}
    up = checks["upstream"]["figures"]
    assert up["received"] == up["committed"] > 0 and up["dropped"] == 0
    assert checks["write:plc/setpoint"]["figures"]["device_holds"] == 42
