"""``gatewayctl identity init|show|install-cert`` on fresh and existing state, checked
with cryptography, Debian's ssh-keygen and openssl."""

from __future__ import annotations

import datetime
import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from gatewayd.identity import not_after
from tests.identity.identity_support import cn, sign_csr
from tests.peers.pki import Pki, make_pki
from tests.support.daemon import gatewayctl

GATEWAY = "gw-test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id=GATEWAY)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gatewayd.toml"
    path.write_text(f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f"{extra}")
    return path


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gatewayctl("identity", *args, "--config", str(config))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_key_csr_and_ssh_key_and_keeps_them_when_run_again(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ident = tmp_path / "state" / "identity"
    out = ctl(config, "init")
    assert out.returncode == 0, out.stderr
    files = {name: ident / name for name in ("gateway.key", "gateway.csr", "ssh_ed25519",
                                             "ssh_ed25519.pub")}
    for path in files.values():
        assert f"created {path}" in out.stdout
    assert mode(ident) == 0o700
    assert mode(files["gateway.key"]) == 0o600 and mode(files["ssh_ed25519"]) == 0o600
    assert mode(files["gateway.csr"]) == 0o644 and mode(files["ssh_ed25519.pub"]) == 0o644

    key = serialization.load_pem_private_key(files["gateway.key"].read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr(files["gateway.csr"].read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == GATEWAY
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:dev:gw:{GATEWAY}"]
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert csr.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    # the CSR as openssl reads it
    req = subprocess.run(["openssl", "req", "-in", str(files["gateway.csr"]), "-noout",
                          "-verify", "-text"], capture_output=True, text=True, check=True)
    assert f"CN = {GATEWAY}" in req.stdout and f"URI:urn:dev:gw:{GATEWAY}" in req.stdout

    ssh_key = serialization.load_ssh_private_key(files["ssh_ed25519"].read_bytes(), None)
    assert isinstance(ssh_key, ed25519.Ed25519PrivateKey)
    pub_line = files["ssh_ed25519.pub"].read_text()
    assert pub_line.startswith("ssh-ed25519 ") and pub_line.endswith(f" gatewayd@{GATEWAY}\n")
    assert pub_line.split()[1].encode() == ssh_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    # ssh-keygen derives the same public key from the private one
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(files["ssh_ed25519"])],
                             capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub_line.split()[:2]

    before = {name: path.read_bytes() for name, path in files.items()}
    again = ctl(config, "init", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["created"] == [] and report["fixed"] == []
    assert sorted(report["kept"]) == sorted(str(p) for p in files.values())
    assert {name: path.read_bytes() for name, path in files.items()} == before


def test_key_modes_are_checked_and_fixed(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert ctl(config, "init").returncode == 0
    key = tmp_path / "state" / "identity" / "gateway.key"
    ssh = tmp_path / "state" / "identity" / "ssh_ed25519"
    key.chmod(0o644)
    ssh.chmod(0o640)
    show = ctl(config, "show")
    assert show.returncode == 1
    assert f"{key} has mode 0644; a private key must be 0600" in show.stdout
    assert f"{ssh} has mode 0640; a private key must be 0600" in show.stdout
    fixed = ctl(config, "init")
    assert fixed.returncode == 0
    assert f"fixed   {key}: mode set to 0600" in fixed.stdout
    assert mode(key) == 0o600 and mode(ssh) == 0o600


def test_show_before_init_names_what_is_missing(tmp_path: Path) -> None:
    out = ctl(write_config(tmp_path), "show", "--json")
    assert out.returncode == 1
    problems = json.loads(out.stdout)["problems"]
    key = tmp_path / "state" / "identity" / "gateway.key"
    assert f"private key {key} does not exist; run 'gatewayctl identity init'" in problems


def test_init_refuses_a_key_it_cannot_use(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key = tmp_path / "state" / "identity" / "gateway.key"
    key.parent.mkdir(parents=True)
    key.write_text("not a key")
    out = ctl(config, "init")
    assert out.returncode == 1
    assert f"private key {key} cannot be loaded" in out.stderr
    assert key.read_text() == "not a key"


def test_install_cert_checks_key_chain_and_dates_then_show_prints_it(tmp_path: Path,
                                                                     pki: Pki) -> None:
    config = write_config(tmp_path, f'\n[identity]\nca_file = "{pki.ca}"\n')
    assert ctl(config, "init").returncode == 0
    ident = tmp_path / "state" / "identity"
    cert_file = ident / "gateway.crt"

    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong_key = sign_csr(ident / "gateway.csr", tmp_path / "wrong-key.crt", pki,
                         public_key=stranger)
    out = ctl(config, "install-cert", str(wrong_key))
    assert out.returncode == 1
    assert "does not match the gateway key" in out.stderr and not cert_file.exists()

    other_ca = sign_csr(ident / "gateway.csr", tmp_path / "other-ca.crt", pki, other_ca=True)
    out = ctl(config, "install-cert", str(other_ca))
    assert out.returncode == 1
    assert f"does not chain to the CA in {pki.ca}" in out.stderr and not cert_file.exists()

    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    expired = sign_csr(ident / "gateway.csr", tmp_path / "expired.crt", pki, days=30, start=old)
    out = ctl(config, "install-cert", str(expired))
    assert out.returncode == 1 and "expired on" in out.stderr and not cert_file.exists()

    good = sign_csr(ident / "gateway.csr", tmp_path / "good.crt", pki, days=30)
    out = ctl(config, "install-cert", str(good))
    assert out.returncode == 0, out.stderr
    assert f"installed {cert_file}: subject CN={GATEWAY}" in out.stdout
    assert cert_file.read_bytes() == good.read_bytes() and mode(cert_file) == 0o644

    show = ctl(config, "show")
    assert show.returncode == 0, show.stdout
    fingerprint = subprocess.run(["openssl", "x509", "-in", str(cert_file), "-noout",
                                  "-fingerprint", "-sha256"], capture_output=True, text=True,
                                 check=True).stdout.strip().split("=", 1)[1]
    ssh_fp = subprocess.run(["ssh-keygen", "-l", "-f", str(ident / "ssh_ed25519.pub")],
                            capture_output=True, text=True, check=True).stdout.split()[1]
    cert = x509.load_pem_x509_certificate(good.read_bytes())
    for text in (f"subject    CN={GATEWAY}", f"issuer     CN={cn(cert.issuer)}",
                 f"sha256     {fingerprint}", f"san        urn:dev:gw:{GATEWAY}",
                 f"to {not_after(cert):%Y-%m-%dT%H:%M:%SZ} (30.0 days left)",
                 "matches the key: yes", f"ed25519  {ssh_fp}", "SHA256:"):
        assert text in show.stdout, text
    info = json.loads(ctl(config, "show", "--json").stdout)
    assert info["problems"] == [] and info["certificate"]["sha256"] == fingerprint
    assert info["ssh"]["sha256"] == ssh_fp


def test_install_cert_without_a_ca_checks_only_the_key(tmp_path: Path, pki: Pki) -> None:
    config = write_config(tmp_path)
    assert ctl(config, "init").returncode == 0
    ident = tmp_path / "state" / "identity"
    other_ca = sign_csr(ident / "gateway.csr", tmp_path / "other-ca.crt", pki, other_ca=True)
    out = ctl(config, "install-cert", str(other_ca), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["installed"] == str(ident / "gateway.crt")
