"""The certificate chain check used where cryptography has no x509.verification
(Debian bookworm ships 38): the same verdicts as the verifier on the same files."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatewayd.identity import IdentityError, _verify_chain, _verify_chain_by_hand, load_certificates
from tests.peers.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id="gw-test")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_a_certificate_issued_by_the_ca_passes_both_ways(pki: Pki) -> None:
    certs = load_certificates(pki.client.cert)
    _verify_chain_by_hand(certs, load_certificates(pki.ca), pki.ca, now())
    _verify_chain(certs, pki.ca, now())


def test_a_certificate_of_another_ca_is_refused_both_ways(pki: Pki) -> None:
    certs = load_certificates(pki.other_client.cert)
    with pytest.raises(IdentityError, match=r"does not chain to the CA in .*: no issuer found "
                                            r"for CN=gw-test"):
        _verify_chain_by_hand(certs, load_certificates(pki.ca), pki.ca, now())
    with pytest.raises(IdentityError, match="does not chain to the CA in"):
        _verify_chain(certs, pki.ca, now())


def test_a_forged_issuer_name_is_caught_by_the_signature(pki: Pki) -> None:
    # Names the real CA as its issuer, but is signed with the other CA's key.
    real_ca = load_certificates(pki.ca)[0]
    other_key = serialization.load_pem_private_key(
        (pki.other_ca.parent / "other-ca.key").read_bytes(), None)
    assert isinstance(other_key, ec.EllipticCurvePrivateKey)
    leaf = load_certificates(pki.client.cert)[0]
    forged = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(real_ca.subject)
              .public_key(leaf.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now() - datetime.timedelta(minutes=5))
              .not_valid_after(now() + datetime.timedelta(days=1))
              .sign(other_key, hashes.SHA256()))
    with pytest.raises(IdentityError, match="no issuer found for CN=gw-test"):
        _verify_chain_by_hand([forged], [real_ca], pki.ca, now())


def test_dates_are_checked(pki: Pki) -> None:
    certs = load_certificates(pki.client.cert)
    later = now() + datetime.timedelta(days=365 * 30)
    with pytest.raises(IdentityError, match="outside its validity period"):
        _verify_chain_by_hand(certs, load_certificates(pki.ca), pki.ca, later)
