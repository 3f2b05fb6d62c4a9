"""The README's demo command works: the daemon, simulated devices and a local broker,
with SenML packs arriving upstream."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_telemetry_arriving_and_stops_cleanly() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "demo" / "run_demo.py"), "--duration", "4"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    packs = re.findall(r"gateways/demo-gw/telemetry: SenML pack of (\d+) records", text)
    assert packs, text[-3000:]
    assert re.search(r"room/temp\s+[\d.]+ Cel", text)
    assert re.search(r"meter/pulses\s+\d+", text)
    assert "demo stopped (daemon exit code 0)" in text
