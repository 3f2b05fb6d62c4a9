"""A CA for the identity tests: signs the gateway's CSR as an operator's CA would."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.peers.pki import Pki


def ca_of(pki: Pki, *, other: bool = False) -> tuple[x509.Certificate,
                                                     ec.EllipticCurvePrivateKey]:
    cert_path = pki.other_ca if other else pki.ca
    key_path = cert_path.with_name("other-ca.key" if other else "ca.key")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def sign_csr(csr_path: Path, out: Path, pki: Pki, *, days: float = 30.0,
             other_ca: bool = False, public_key: ec.EllipticCurvePublicKey | None = None,
             start: datetime.datetime | None = None) -> Path:
    """A client certificate for the CSR's subject and SAN (or for ``public_key``)."""
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    ca, ca_key = ca_of(pki, other=other_ca)
    start = start or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    key = public_key or csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days, minutes=5))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
