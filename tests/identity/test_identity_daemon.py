"""The identity through the running daemon: days to certificate expiry in status and
metrics, and the ``mtls`` and ``jwt`` uplink auth using the key made by
``gatewayctl identity init`` (Debian's Mosquitto requiring a client certificate;
an amqtt broker verifying the ES256 token with the gateway's public key)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqtt.broker import Broker
from cryptography.hazmat.primitives import serialization

from tests.identity.identity_support import sign_csr
from tests.peers.mosquitto import Mosquitto, free_port
from tests.peers.pki import Pki, make_pki
from tests.support.daemon import DaemonProcess, gatewayctl
from tests.uplink.jwt_broker import GatewayJwtAuthPlugin, broker_config

pytestmark = pytest.mark.timeout(120)

GATEWAY = "gw-test"
WAIT = 30.0

CONFIG = """
[gateway]
id = "{gateway}"
state_dir = "{state}"

[identity]
ca_file = "{ca}"

[logging]
status_interval = "1s"

[uplinks.cloud]
url = "{url}"
ca_file = "{ca}"
auth = {{ type = "{auth}" }}
backoff_initial = "50ms"
backoff_max = "300ms"
connect_timeout = "2s"
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id=GATEWAY)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", pki=pki) as m:
        yield m


def metric(text: str, name: str) -> float:
    found = re.search("^" + re.escape(name) + r" (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in metrics"
    return float(found.group(1))


def prepare(daemon: DaemonProcess, pki: Pki, *, days: float) -> Path:
    """identity init, then a certificate from the test CA valid for ``days``."""
    init = gatewayctl("identity", "init", "--config", str(daemon.config_path))
    assert init.returncode == 0, init.stderr
    ident = Path(re.findall(r"created (\S+gateway\.csr)", init.stdout)[0]).parent
    cert = sign_csr(ident / "gateway.csr", daemon.root / f"cert-{days:g}.pem", pki, days=days)
    out = gatewayctl("identity", "install-cert", str(cert), "--config", str(daemon.config_path))
    assert out.returncode == 0, out.stderr
    return ident


def connected(st: dict[str, Any]) -> bool:
    return bool(st["components"]["uplink:cloud"]["health"]["connected"])


def test_mtls_uplink_uses_the_identity_and_status_shows_expiry(
        tmp_path: Path, pki: Pki, broker: Mosquitto,
        daemon_factory: type[DaemonProcess]) -> None:
    daemon = daemon_factory(CONFIG.format(
        gateway=GATEWAY, state=tmp_path / "state", ca=pki.ca, auth="mtls",
        url=f"mqtts://127.0.0.1:{broker.mtls_port}"))
    ident = prepare(daemon, pki, days=10)
    mark = len(broker.log)
    daemon.start()
    daemon.wait_ready()
    st = daemon.wait_status(connected, WAIT)
    # the broker took the gateway certificate's CN as the username
    broker.wait_log(lambda line: f"u'{GATEWAY}'" in line, start=mark, timeout=WAIT)
    ident_status = st["identity"]
    assert ident_status["present"] and ident_status["subject"] == f"CN={GATEWAY}"
    assert 9.9 < ident_status["days_left"] <= 10.01
    assert ident_status["expiry_warning"] is True and ident_status["warning_days"] == 30
    text = daemon.ctl("status").stdout
    assert re.search(r"certificate: CN=gw-test, expires \S+ \(10\.0 days\), "
                     r"WARNING: expires within 30 days", text), text
    metrics = daemon.ctl("metrics").stdout
    assert 9.9 < metric(metrics, "gatewayd_identity_certificate_expiry_days") <= 10.01
    assert metric(metrics, "gatewayd_identity_certificate_expiry_warning") == 1
    assert "identity: certificate" in daemon.log_text()  # the warning is logged once

    # a renewed certificate is picked up without a restart
    renewed = sign_csr(ident / "gateway.csr", tmp_path / "renewed.pem", pki, days=90)
    out = gatewayctl("identity", "install-cert", str(renewed), "--config",
                     str(daemon.config_path))
    assert out.returncode == 0, out.stderr
    st = daemon.wait_status(lambda s: s["identity"].get("days_left", 0) > 89, WAIT)
    assert st["identity"]["expiry_warning"] is False
    metrics = daemon.ctl("metrics").stdout
    assert metric(metrics, "gatewayd_identity_certificate_expiry_warning") == 0
    assert "WARNING" not in daemon.ctl("status").stdout


def test_status_says_when_there_is_no_certificate(
        tmp_path: Path, pki: Pki, broker: Mosquitto,
        daemon_factory: type[DaemonProcess]) -> None:
    daemon = daemon_factory(CONFIG.format(
        gateway=GATEWAY, state=tmp_path / "state", ca=pki.ca, auth="none",
        url=f"mqtts://127.0.0.1:{broker.tls_port}"))
    daemon.start()
    daemon.wait_ready()
    st = daemon.status()
    assert st["identity"]["present"] is False
    assert st["identity"]["error"].endswith("gateway.crt does not exist")
    metrics = daemon.ctl("metrics").stdout
    assert metric(metrics, "gatewayd_identity_certificate_present") == 0
    assert "gatewayd_identity_certificate_expiry_days" not in metrics
    assert "certificate: none" in daemon.ctl("status").stdout


async def test_jwt_uplink_signs_with_the_identity_key(
        tmp_path: Path, pki: Pki, daemon_factory: type[DaemonProcess]) -> None:
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    port = free_port()
    daemon = daemon_factory(CONFIG.format(
        gateway=GATEWAY, state=tmp_path / "state", ca=pki.ca, auth="jwt",
        url=f"mqtt://127.0.0.1:{port}"))
    init = await asyncio.to_thread(gatewayctl, "identity", "init", "--config",
                                   str(daemon.config_path))
    assert init.returncode == 0, init.stderr
    key = serialization.load_pem_private_key(
        (tmp_path / "state" / "identity" / "gateway.key").read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    GatewayJwtAuthPlugin.verdicts.clear()
    broker = Broker(broker_config(port, public.decode(), audience=None))
    await broker.start()
    try:
        daemon.start()
        await asyncio.to_thread(daemon.wait_ready)
        await asyncio.to_thread(daemon.wait_status, connected, WAIT)
    finally:
        await broker.shutdown()
    accepted = [v for v in GatewayJwtAuthPlugin.verdicts if v.accepted]
    assert accepted, GatewayJwtAuthPlugin.verdicts
    assert accepted[0].username == GATEWAY
    assert accepted[0].claims is not None and accepted[0].claims["sub"] == GATEWAY
