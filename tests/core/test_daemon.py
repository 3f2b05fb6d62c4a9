"""The daemon as systemd runs it: a subprocess with NOTIFY_SOCKET bound by the test."""

from __future__ import annotations

import os
import signal
import stat
import time
from typing import Any

from gatewayd.control import request
from tests.support.daemon import DaemonProcess, gatewayctl

DEVICES = """
[gateway]
id = "gw-test"

[logging]
status_interval = "1s"

[buffer]
commit_interval = "50ms"

[devices.alpha]
driver = "sim"
poll = "50ms"
points = [{{ name = "n", signal = "counter" }}]

[devices.beta]
driver = "sim"
poll = "{beta_poll}"
points = [{{ name = "n", signal = "counter" }}]
"""


def readings(st: dict[str, Any], device: str) -> int:
    return int(st["components"][f"device:{device}"]["health"]["readings"])


def test_ready_status_watchdog_and_clean_stop(daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms"), watchdog_usec=400_000)
    d.start()
    d.wait_ready()
    # READY promises a working control socket: asked at once, it answers.
    assert request(d.socket, "status")["gateway"] == "gw-test"
    _, st = d.notify.wait_for(lambda m: m.get("STATUS", "").startswith("devices 2/2 ok"))
    assert st["STATUS"] == "devices 2/2 ok, uplinks 0/0 connected, backlog 0, dropped 0"
    first, _ = d.notify.wait_for(lambda m: m.get("WATCHDOG") == "1")
    d.notify.wait_for(lambda m: m.get("WATCHDOG") == "1", start=first + 1)

    status = d.wait_status(lambda s: readings(s, "alpha") >= 3 and readings(s, "beta") >= 3)
    assert status["gateway"] == "gw-test"
    assert status["config"] == str(d.config_path)
    assert status["config_files"] == [str(d.config_path)]
    assert status["pid"] == d.proc.pid  # type: ignore[union-attr]
    assert status["uptime_s"] > 0
    for name in ("buffer", "control", "device:alpha", "device:beta"):
        assert status["components"][name]["state"] == "running", name
        assert status["components"][name]["last_error"] is None
    assert status["buffer"]["committed_total"] >= 6
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660

    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 5.0
    d.notify.wait_for(lambda m: m.get("STOPPING") == "1", timeout=1)
    assert not d.socket.exists()


def test_reload_restarts_only_the_changed_device(daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms"))
    d.start()
    ready = d.wait_ready()
    before = d.wait_status(lambda s: readings(s, "alpha") >= 5 and readings(s, "beta") >= 5)

    d.write_config(DEVICES.format(beta_poll="100ms"))
    d.signal(signal.SIGHUP)
    i, msg = d.notify.wait_for(lambda m: m.get("RELOADING") == "1", start=ready + 1)
    usec = int(msg["MONOTONIC_USEC"])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
    d.wait_ready(start=i + 1)

    after = d.wait_status(lambda s: s["reloads"] == 1)
    assert after["last_reload"]["ok"] is True
    assert after["last_reload"]["restarted"] == ["device:beta"]
    alpha_before = before["components"]["device:alpha"]
    alpha_after = after["components"]["device:alpha"]
    # alpha kept running: same run, its counter continued
    assert alpha_after["since"] == alpha_before["since"]
    assert readings(after, "alpha") > readings(before, "alpha")
    # beta was replaced: a new run with a fresh counter
    beta_since = before["components"]["device:beta"]["since"]
    assert after["components"]["device:beta"]["since"] > beta_since
    assert readings(after, "beta") < readings(before, "beta") + 5


def test_invalid_reload_keeps_the_running_config(daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms"))
    d.start()
    ready = d.wait_ready()
    before = d.wait_status(lambda s: readings(s, "alpha") >= 2)

    d.write_config(DEVICES.format(beta_poll="soon"))
    d.signal(signal.SIGHUP)
    d.wait_ready(start=ready + 1)
    after = d.wait_status(lambda s: s["reload_failures"] == 1)
    assert after["reloads"] == 0
    assert after["last_reload"]["ok"] is False
    assert after["last_reload"]["problems"] == [
        f"{d.config_path}: devices.beta.poll: invalid duration 'soon'; expected a number with "
        "a unit (ms, s, m, h, d), such as '500ms', '5s' or '1m30s'"]
    for dev in ("alpha", "beta"):
        assert after["components"][f"device:{dev}"]["since"] == \
            before["components"][f"device:{dev}"]["since"]
    d.wait_status(lambda s: readings(s, "beta") > readings(after, "beta"))
    assert "reload refused" in d.log_text()
    human = d.ctl("status")
    assert human.returncode == 0
    assert "last reload refused: " in human.stdout


def test_failing_component_is_restarted_and_shows_its_error(
        daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms").replace(
        '[devices.beta]\ndriver = "sim"', '[devices.beta]\ndriver = "sim"\nfail_after = 3'))
    d.start()
    d.wait_ready()
    st = d.wait_status(lambda s: s["components"]["device:beta"]["restarts"] >= 2, timeout=30)
    beta = st["components"]["device:beta"]
    assert beta["last_error"] == "simulated failure after 3 polls"
    assert beta["errors"] == beta["restarts"]
    # alpha is unaffected
    assert st["components"]["device:alpha"]["restarts"] == 0
    assert st["components"]["device:alpha"]["state"] == "running"
    # readings of beta keep counting across restarts: 3 polls per run
    assert readings(st, "beta") >= 6
    log = d.log_text()
    assert "device:beta failed: simulated failure after 3 polls; restarting in" in log
    assert "Traceback" not in log


def test_wedged_loop_stops_the_watchdog(daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms").replace(
        '[devices.beta]\ndriver = "sim"', '[devices.beta]\ndriver = "sim"\nwedge_after = 20'),
        watchdog_usec=200_000)
    d.start()
    d.wait_ready()
    # wait until the drill has wedged the loop (it logs before blocking)
    deadline = time.monotonic() + 20
    while "wedging the event loop" not in d.log_text():
        assert time.monotonic() < deadline, d.log_text()
        time.sleep(0.05)
    count = sum(1 for m in d.notify.messages if m.get("WATCHDOG") == "1")
    time.sleep(1.0)  # five watchdog periods: none may arrive while the loop is wedged
    assert sum(1 for m in d.notify.messages if m.get("WATCHDOG") == "1") == count
    assert count >= 1
    assert d.proc is not None and d.proc.poll() is None
    d.kill9()


def test_gatewayctl_says_when_the_daemon_is_not_running(tmp_path: Any) -> None:
    out = gatewayctl("status", "--socket", str(tmp_path / "none.sock"))
    assert out.returncode == 3
    assert out.stderr == (
        f"gatewayctl: gatewayd is not running (no answer on {tmp_path}/none.sock)\n")


def test_metrics_text(daemon_factory: type[DaemonProcess]) -> None:
    d = daemon_factory(DEVICES.format(beta_poll="50ms"))
    d.start()
    d.wait_ready()
    d.wait_status(lambda s: readings(s, "alpha") >= 2)
    out = d.ctl("metrics")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert "gatewayd_up 1" in lines
    assert "# TYPE gatewayd_device_readings_total counter" in lines
    assert 'gatewayd_component_running{component="device:alpha"} 1' in lines
    assert any(line.startswith('gatewayd_device_readings_total{device="alpha"} ')
               for line in lines)
    assert any(line.startswith("gatewayd_buffer_committed_total ") for line in lines)
