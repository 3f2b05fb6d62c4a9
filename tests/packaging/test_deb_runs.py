"""The unpacked package runs with Debian's /usr/bin/python3 and python3-* packages."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT, run
from tests.support.daemon import NotifyListener

DEBIAN_PYTHON = "/usr/bin/python3"

# The first test to need the package builds it (about a minute, more on a loaded
# machine or with a cold wheel cache).
pytestmark = pytest.mark.timeout(900)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_wrappers_run_debian_python(unpacked: Path) -> None:
    for name in ("gatewayd", "gatewayctl"):
        first = (unpacked / "usr/bin" / name).read_text().splitlines()[0]
        assert first == f"#!{DEBIAN_PYTHON} -I"
    done = run(unpacked / "usr/bin/gatewayctl", "--version")
    assert done.returncode == 0, done.stderr


def test_check_config_passes_on_the_shipped_conffile(unpacked: Path) -> None:
    conf = unpacked / "etc/gatewayd/gatewayd.toml"
    done = run(unpacked / "usr/bin/gatewayctl", "check-config", "--config", conf, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"valid": True, "files": [str(conf)], "devices": ["demo"],
                                       "uplinks": []}
    # It is commented for the operator, and the same file as etc/gatewayd.toml.
    text = conf.read_text()
    assert conf.read_bytes() == (ROOT / "etc/gatewayd.toml").read_bytes()
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) >= 20


def test_the_conffile_examples_are_valid_when_uncommented(unpacked: Path,
                                                          tmp_path: Path) -> None:
    """What the shipped config shows commented out is valid as written."""
    lines = []
    for line in (unpacked / "etc/gatewayd/gatewayd.toml").read_text().splitlines():
        example = re.match(r"^# (\[.*\]|[a-z_]+ = .*|  \{.*|\])$", line)
        lines.append(example.group(1) if example else line)
    conf = tmp_path / "gatewayd.toml"
    conf.write_text("\n".join(lines) + "\n")
    done = run(unpacked / "usr/bin/gatewayctl", "check-config", "--config", conf, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert (summary["devices"], summary["uplinks"]) == (["boiler", "demo"], ["cloud"])


def test_entry_points_resolve_from_the_bundle(unpacked: Path) -> None:
    """The drivers are found through the gatewayd.drivers entry points of the bundled
    dist-info, as the daemon finds them."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from importlib.metadata import entry_points\n"
        "eps = entry_points(group='gatewayd.drivers')\n"
        "print(' '.join(sorted(f'{e.name}={e.load().__module__}' for e in eps)))\n"
    )
    done = run(DEBIAN_PYTHON, "-I", "-c", code, unpacked / "usr/lib/gatewayd")
    assert done.returncode == 0, done.stderr
    import tomllib
    with (ROOT / "pyproject.toml").open("rb") as fh:
        declared = tomllib.load(fh)["project"]["entry-points"]["gatewayd.drivers"]
    assert done.stdout.split() == sorted(f"{k}={v.split(':')[0]}" for k, v in declared.items())


CONFIG = """
[gateway]
id = "gw-pkg"

[devices.demo]
driver = "sim"
poll = "200ms"
points = [{{ name = "count", signal = "counter" }}]

[buffer]
commit_interval = "100ms"

[local]
clients_file = "{clients}"

[local.mqtt]
listen = ["127.0.0.1:{mqtt_port}"]

[local.coap]
listen = ["127.0.0.1:{coap_port}"]
"""


class PackagedDaemon:
    """``usr/bin/gatewayd run`` from the unpacked package, systemd's part done by hand."""

    def __init__(self, root: Path, work: Path, config: str) -> None:
        self.root = root
        self.config = work / "gatewayd.toml"
        self.config.write_text(config)
        self.state = work / "state"
        self.runtime = Path(tempfile.mkdtemp(prefix="gwpkg-"))
        self.notify = NotifyListener(self.runtime / "notify.sock")
        self.log = work / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(NOTIFY_SOCKET=str(self.notify.path), STATE_DIRECTORY=str(self.state),
                   RUNTIME_DIRECTORY=str(self.runtime))
        return env

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.root / "usr/bin/gatewayctl", *args, "--config", self.config,
                   timeout=60, env=self.env())

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.root / "usr/bin/gatewayd", "run", "--config", self.config],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, object]:
        done = self.ctl("status", "--json", "--socket", str(self.runtime / "control.sock"))
        assert done.returncode == 0, done.stderr
        data: dict[str, object] = json.loads(done.stdout)
        return data

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def packaged_daemon(unpacked: Path, tmp_path: Path) -> Iterator[PackagedDaemon]:
    config = CONFIG.format(clients=tmp_path / "clients.toml", mqtt_port=free_port(),
                           coap_port=free_port(socket.SOCK_DGRAM))
    d = PackagedDaemon(unpacked, tmp_path, config)
    yield d
    d.stop()
    d.notify.close()
    print(d.log.read_text() if d.log.exists() else "")


def _health(st: dict[str, object], component: str) -> dict[str, object]:
    comps = st["components"]
    assert isinstance(comps, dict)
    return dict((comps.get(component) or {}).get("health") or {})


def test_daemon_runs_from_the_bundle_until_ready(packaged_daemon: PackagedDaemon) -> None:
    """Debian's python3 with the python3-* packages, the bundled code only: READY, the
    sim driver's readings in the buffer, the local MQTT broker (amqtt) and CoAP server
    (aiocoap) listening and taking a reading from a real mosquitto_pub."""
    d = packaged_daemon
    added = d.ctl("clients", "add", "dev1")
    assert added.returncode == 0, added.stderr
    start = time.monotonic()
    d.start()
    d.notify.wait_for(lambda m: m.get("READY") == "1", timeout=90)
    print(f"READY {time.monotonic() - start:.2f}s after exec")

    deadline = time.monotonic() + 60
    while True:
        st = d.status()
        listening = (_health(st, "local-mqtt").get("listening")
                     and _health(st, "local-coap").get("listening"))
        rows = st.get("buffer", {}).get("rows", 0)  # type: ignore[union-attr]
        if listening and rows:
            break
        assert time.monotonic() < deadline, json.dumps(st)[:3000]
        time.sleep(0.2)

    token = d.ctl("clients", "token", "dev1", "--ttl", "5m")
    assert token.returncode == 0, token.stderr
    port = re.search(r"127\.0\.0\.1:(\d+)", d.config.read_text().split("[local.mqtt]")[1])
    assert port is not None
    pub = run("mosquitto_pub", "-h", "127.0.0.1", "-p", port.group(1), "-i", "dev1",
              "-u", "dev1", "-P", token.stdout.strip(), "-q", "1",
              "-t", "devices/dev1/temp", "-m", "21.5", timeout=60)
    assert pub.returncode == 0, pub.stderr
    # PUBACK came after the commit: the broker counted exactly that one reading.
    mqtt = _health(d.status(), "local-mqtt")
    assert (mqtt["messages"], mqtt["readings"], mqtt["refused_total"]) == (1, 1, 0), mqtt
    assert d.stop() == 0


def test_unit_file_verifies_and_scores(unpacked: Path) -> None:
    unit = unpacked / "lib/systemd/system/gatewayd.service"
    assert unit.read_bytes() == (ROOT / "systemd/gatewayd.service").read_bytes()
    text = unit.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "WatchdogSec=30s",
                 "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=gatewayd",
                 "RuntimeDirectory=gatewayd", "ConfigurationDirectory=gatewayd",
                 "User=gatewayd", "CapabilityBoundingSet=", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "SystemCallFilter=@system-service"):
        assert f"\n{line}\n" in text, line
    # On this machine, where gatewayd is not installed, the two commands are missing and
    # nothing else may be reported. (The install test verifies it where they exist.)
    verify = run("systemd-analyze", "verify", "--man=no", unit)
    expected = {f"gatewayd.service: Command /usr/bin/{cmd} is not executable: No such file "
                "or directory" for cmd in ("gatewayd", "gatewayctl")}
    assert set(verify.stderr.strip().splitlines()) <= expected, verify.stderr
    security = run("systemd-analyze", "security", "--offline=true", "--no-pager", unit)
    level = re.search(r"Overall exposure level for gatewayd.service: (\d+\.\d+)", security.stdout)
    assert level is not None, security.stdout[-2000:] + security.stderr
    print(f"systemd-analyze security: {level.group(1)}")
    assert float(level.group(1)) <= 2.5
