"""TLS material for tests, made with ``cryptography``: a CA, a server certificate
(SAN DNS:localhost, IP:127.0.0.1), a client certificate (CN = the gateway id)
and a second, unrelated CA with its own client certificate.

Every key is EC P-256 (the gateway identity kind) written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertKey:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files."""

    ca: Path  # the CA every peer trusts
    server: CertKey  # signed by ``ca``
    client: CertKey  # signed by ``ca``, CN = gateway id
    other_ca: Path  # an unrelated CA
    other_client: CertKey  # signed by ``other_ca``, CN = gateway id
    gateway_id: str


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, *,
           server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path, *, gateway_id: str = "gw-test") -> Pki:
    """Generate the whole set into ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca("gatewayd test CA")
    other, other_key = _make_ca("unrelated test CA")
    files: dict[str, CertKey] = {}
    for label, issuer, issuer_key, cn, server in (
        ("server", ca, ca_key, "localhost", True),
        ("client", ca, ca_key, gateway_id, False),
        ("other-client", other, other_key, gateway_id, False),
    ):
        cert, key = _issue(issuer, issuer_key, cn, server=server)
        pair = CertKey(directory / f"{label}.crt", directory / f"{label}.key")
        _write_cert(pair.cert, cert)
        _write_key(pair.key, key)
        files[label] = pair
    _write_cert(directory / "ca.crt", ca)
    _write_cert(directory / "other-ca.crt", other)
    _write_key(directory / "ca.key", ca_key)
    _write_key(directory / "other-ca.key", other_key)
    return Pki(ca=directory / "ca.crt", server=files["server"], client=files["client"],
               other_ca=directory / "other-ca.crt", other_client=files["other-client"],
               gateway_id=gateway_id)
