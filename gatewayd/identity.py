"""The gateway's identity: its EC P-256 key, CSR and certificate, and its SSH key.

The private key is made on the gateway (mode 0600) and never leaves it: an
operator sends the CSR to the CA and installs the certificate it returns.
The ``mtls`` and ``jwt`` uplink auth use this key and certificate, signed
command results are signed with the key, and the tunnel authenticates with
the ed25519 SSH key.

- :func:`init_identity` makes what is missing (key, CSR, SSH key) and keeps
  what exists; it is safe to run again.
- :func:`install_certificate` checks a certificate against the key (and the
  configured CA) before it replaces ``cert_file``.
- :func:`describe_identity` and :class:`gatewayd.certwatch.CertificateWatch` report fingerprints,
  subject and days to expiry (``gatewayctl identity show``, status, metrics).

Everything here is blocking file work: the daemon calls it through
``asyncio.to_thread`` or on small files only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from gatewayd.config.schema import IdentityConfig
from gatewayd.errors import GatewayError

log = logging.getLogger(__name__)

KEY_MODE = 0o600
DIR_MODE = 0o700
PUBLIC_MODE = 0o644


class IdentityError(GatewayError):
    """An identity file is missing, unreadable, or does not fit; ``path`` names it."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


def urn(gateway_id: str) -> str:
    return f"urn:dev:gw:{gateway_id}"


# ---- fingerprints ------------------------------------------------------------------


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def public_key_fingerprint(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    """``SHA256:`` and the hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as ``openssl x509 -fingerprint -sha256`` shows it."""
    return _colon_hex(cert.fingerprint(hashes.SHA256()))


def ssh_fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` shows it."""
    blob = base64.b64decode(key.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ---- files -------------------------------------------------------------------------


def _owner_for(directory: Path) -> tuple[int, int] | None:
    """When root writes identity files, they belong to the owner of the nearest
    existing directory above them (the state directory, owned by the daemon's
    user), so that the daemon can read them. None when not root."""
    if os.geteuid() != 0:
        return None
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = probe.stat()
    return st.st_uid, st.st_gid


def _make_dir(directory: Path, owner: tuple[int, int] | None) -> None:
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for made in missing:
        if owner is not None:
            os.chown(made, *owner)


def _write_file(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename) with ``mode``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{what} {path} does not exist; run 'gatewayctl identity init'",
                            path=path) from None
    except OSError as err:
        raise IdentityError(f"cannot read {what} {path}: {err.strerror or err}",
                            path=path) from err


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The gateway key; raises IdentityError unless it is an unencrypted EC P-256 PEM key."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise IdentityError(f"private key {path} cannot be loaded (expected an unencrypted "
                            "PEM key)", path=path) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise IdentityError(f"private key {path} is not an EC P-256 key", path=path)
    return key


def load_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate of a PEM file, leaf first; raises IdentityError."""
    data = _read(path, what)
    # One PEM block at a time: x509.load_pem_x509_certificates needs cryptography 39,
    # and Debian bookworm has 38.
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data,
                        re.DOTALL)
    try:
        certs = [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as err:
        raise IdentityError(f"{what} {path} holds a malformed PEM certificate",
                            path=path) from err
    if not certs:
        raise IdentityError(f"{what} {path} holds no PEM certificate", path=path)
    return certs


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, timezone-aware (``not_valid_after_utc`` needs cryptography
    42; bookworm's 38 has only the naive UTC ``not_valid_after``)."""
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=datetime.UTC)


def not_before(cert: x509.Certificate) -> datetime.datetime:
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc
    return cert.not_valid_before.replace(tzinfo=datetime.UTC)


def _same_key(a: ec.EllipticCurvePublicKey, b: Any) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return isinstance(b, ec.EllipticCurvePublicKey) and \
        a.public_bytes(*fmt) == b.public_bytes(*fmt)


def mode_problem(path: Path) -> str | None:
    """A sentence when group or others may read a private key file, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} has mode {mode:04o}; a private key must be 0600"
    return None


# ---- init --------------------------------------------------------------------------


def make_csr(key: ec.EllipticCurvePrivateKey, gateway_id: str) -> x509.CertificateSigningRequest:
    """A CSR with CN = gateway id and the SAN URI ``urn:dev:gw:{id}``."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(urn(gateway_id))]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _csr_fits(path: Path, key: ec.EllipticCurvePrivateKey, gateway_id: str) -> bool:
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError):
        return False
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (_same_key(key.public_key(), csr.public_key()) and csr.is_signature_valid
            and len(cn) == 1 and cn[0].value == gateway_id
            and san.get_values_for_type(x509.UniformResourceIdentifier) == [urn(gateway_id)])


@dataclass
class InitReport:
    """What ``init_identity`` did, file by file."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "kept": self.kept, "fixed": self.fixed}


def _ensure_key(path: Path, owner: tuple[int, int] | None,
                report: InitReport) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = load_private_key(path)
        problem = mode_problem(path)
        if problem:
            os.chmod(path, KEY_MODE)
            report.fixed.append(f"{path}: mode set to 0600")
        report.kept.append(str(path))
        return key
    _make_dir(path.parent, owner)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_file(path, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), KEY_MODE, owner)
    report.created.append(str(path))
    return key


def _ensure_ssh_key(path: Path, gateway_id: str, owner: tuple[int, int] | None,
                    report: InitReport) -> None:
    pub_path = ssh_public_path(path)
    if path.exists():
        try:
            key = serialization.load_ssh_private_key(_read(path, "SSH key"), password=None)
        except (ValueError, TypeError) as err:
            raise IdentityError(f"SSH key {path} cannot be loaded (expected an unencrypted "
                                "OpenSSH key)", path=path) from err
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IdentityError(f"SSH key {path} is not an ed25519 key", path=path)
        if mode_problem(path):
            os.chmod(path, KEY_MODE)
            report.fixed.append(f"{path}: mode set to 0600")
        report.kept.append(str(path))
    else:
        _make_dir(path.parent, owner)
        key = ed25519.Ed25519PrivateKey.generate()
        _write_file(path, key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()), KEY_MODE, owner)
        report.created.append(str(path))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    line = public + f" gatewayd@{gateway_id}\n".encode()
    try:
        current = pub_path.read_bytes()
    except OSError:
        current = b""
    if current.split()[:2] == line.split()[:2]:
        report.kept.append(str(pub_path))
    else:
        _write_file(pub_path, line, PUBLIC_MODE, owner)
        report.created.append(str(pub_path))


def ssh_public_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def init_identity(identity: IdentityConfig, gateway_id: str) -> InitReport:
    """Make the gateway key, its CSR and the SSH key where missing; keep what exists
    (tightening a key's mode to 0600). Raises IdentityError (or OSError) when an
    existing file cannot be used."""
    report = InitReport()
    owner = _owner_for(identity.key_file.parent)
    key = _ensure_key(identity.key_file, owner, report)
    csr_file = identity.csr_file
    if _csr_fits(csr_file, key, gateway_id):
        report.kept.append(str(csr_file))
    else:
        _make_dir(csr_file.parent, owner)
        csr = make_csr(key, gateway_id)
        _write_file(csr_file, csr.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE, owner)
        report.created.append(str(csr_file))
    _ensure_ssh_key(identity.ssh_key_file, gateway_id, owner, report)
    return report


# ---- install-cert ------------------------------------------------------------------


def _verify_chain(certs: list[x509.Certificate], ca_file: Path, now: datetime.datetime) -> None:
    roots = load_certificates(ca_file, "CA file")
    try:
        from cryptography.x509 import verification
    except ImportError:  # cryptography < 45 (Debian bookworm): the same checks, by hand
        _verify_chain_by_hand(certs, roots, ca_file, now)
        return
    # A client certificate: webpki rules, except that the subject alternative name
    # may be absent (many private CAs issue client certificates with a CN only).
    ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    verifier = (verification.PolicyBuilder().store(verification.Store(roots)).time(now)
                .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=ee_policy)
                .build_client_verifier())
    try:
        verifier.verify(certs[0], certs[1:])
    except verification.VerificationError as err:
        raise IdentityError(f"certificate does not chain to the CA in {ca_file}: {err}",
                            path=ca_file) from None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    algorithm = cert.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _verify_chain_by_hand(certs: list[x509.Certificate], roots: list[x509.Certificate],
                          ca_file: Path, now: datetime.datetime) -> None:
    """Leaf to a root of ``ca_file`` through the given intermediates: each link signed by
    the next, every certificate within its dates, every issuer a CA."""
    def refuse(why: str) -> IdentityError:
        return IdentityError(f"certificate does not chain to the CA in {ca_file}: {why}",
                             path=ca_file)

    cert, intermediates = certs[0], certs[1:]
    for _ in range(len(certs) + 1):
        if not not_before(cert) <= now < not_after(cert):
            raise refuse(f"{cert.subject.rfc4514_string()} is outside its validity period")
        for root in roots:
            if root.subject == cert.issuer and _is_ca(root) and _signed_by(cert, root):
                if not not_before(root) <= now < not_after(root):
                    raise refuse(f"the CA {root.subject.rfc4514_string()} is outside its "
                                 "validity period")
                return
        issuer = next((c for c in intermediates if c.subject == cert.issuer and _is_ca(c)
                       and _signed_by(cert, c)), None)
        if issuer is None:
            raise refuse(f"no issuer found for {cert.subject.rfc4514_string()}")
        intermediates = [c for c in intermediates if c is not issuer]
        cert = issuer
    raise refuse("the chain is too long")


def certificate_info(cert: x509.Certificate, now: datetime.datetime) -> dict[str, Any]:
    end = not_after(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:X}",
        "san": names,
        "not_before": not_before(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": round((end - now).total_seconds() / 86400, 2),
        "sha256": certificate_fingerprint(cert),
    }


def install_certificate(identity: IdentityConfig, source: Path, *,
                        now: datetime.datetime | None = None) -> dict[str, Any]:
    """Install ``source`` (PEM: the certificate, then any intermediates) as
    ``cert_file`` after checking that it holds the gateway's public key, is
    valid now, and chains to ``ca_file`` when one is configured.

    Raises IdentityError saying what does not fit; nothing is written then."""
    now = now or datetime.datetime.now(datetime.UTC)
    certs = load_certificates(source)
    leaf = certs[0]
    key = load_private_key(identity.key_file)
    if not _same_key(key.public_key(), leaf.public_key()):
        theirs = leaf.public_key()
        shown = (public_key_fingerprint(theirs)
                 if isinstance(theirs, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey))
                 else type(theirs).__name__)
        raise IdentityError(
            f"certificate {source} does not match the gateway key {identity.key_file} "
            f"(certificate key {shown}, gateway key "
            f"{public_key_fingerprint(key.public_key())})", path=source)
    if not_after(leaf) <= now:
        raise IdentityError(f"certificate {source} expired on "
                            f"{not_after(leaf):%Y-%m-%d %H:%M:%S} UTC", path=source)
    if not_before(leaf) > now:
        raise IdentityError(f"certificate {source} is not valid before "
                            f"{not_before(leaf):%Y-%m-%d %H:%M:%S} UTC", path=source)
    if identity.ca_file is not None:
        _verify_chain(certs, identity.ca_file, now)
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    owner = _owner_for(identity.cert_file.parent)
    _make_dir(identity.cert_file.parent, owner)
    _write_file(identity.cert_file, data, PUBLIC_MODE, owner)
    return certificate_info(leaf, now)


# ---- show --------------------------------------------------------------------------


def describe_identity(identity: IdentityConfig, gateway_id: str, *,
                      now: datetime.datetime | None = None) -> dict[str, Any]:
    """Everything ``gatewayctl identity show`` prints; ``problems`` lists what is
    missing or wrong (empty when the identity is complete and consistent)."""
    now = now or datetime.datetime.now(datetime.UTC)
    problems: list[str] = []
    out: dict[str, Any] = {"gateway": gateway_id, "urn": urn(gateway_id)}
    public: ec.EllipticCurvePublicKey | None = None
    key_info: dict[str, Any] = {"file": str(identity.key_file)}
    try:
        key = load_private_key(identity.key_file)
        public = key.public_key()
        key_info.update(algorithm="EC P-256", sha256=public_key_fingerprint(public),
                        mode=f"{stat.S_IMODE(identity.key_file.stat().st_mode):04o}")
        problem = mode_problem(identity.key_file)
        if problem:
            problems.append(problem)
    except IdentityError as err:
        problems.append(str(err))
    out["key"] = key_info

    csr_info: dict[str, Any] = {"file": str(identity.csr_file)}
    try:
        csr = x509.load_pem_x509_csr(identity.csr_file.read_bytes())
        csr_info["subject"] = csr.subject.rfc4514_string()
        if public is not None and not _same_key(public, csr.public_key()):
            problems.append(f"CSR {identity.csr_file} is not for the gateway key")
    except (OSError, ValueError):
        csr_info["subject"] = None
    out["csr"] = csr_info

    cert_info: dict[str, Any] = {"file": str(identity.cert_file)}
    try:
        certs = load_certificates(identity.cert_file)
        cert_info.update(certificate_info(certs[0], now))
        cert_info["matches_key"] = public is not None and _same_key(public,
                                                                    certs[0].public_key())
        if public is not None and not cert_info["matches_key"]:
            problems.append(f"certificate {identity.cert_file} does not match the gateway key")
        if cert_info["days_left"] <= 0:
            problems.append(f"certificate {identity.cert_file} has expired")
    except IdentityError as err:
        cert_info["error"] = str(err)
        problems.append(str(err))
    out["certificate"] = cert_info

    ssh_info: dict[str, Any] = {"file": str(identity.ssh_key_file),
                                "public_file": str(ssh_public_path(identity.ssh_key_file))}
    try:
        ssh_key = serialization.load_ssh_private_key(
            _read(identity.ssh_key_file, "SSH key"), password=None)
        if isinstance(ssh_key, ed25519.Ed25519PrivateKey):
            ssh_info.update(algorithm="ed25519", sha256=ssh_fingerprint(ssh_key.public_key()),
                            public=ssh_key.public_key().public_bytes(
                                serialization.Encoding.OpenSSH,
                                serialization.PublicFormat.OpenSSH).decode())
        else:
            problems.append(f"SSH key {identity.ssh_key_file} is not an ed25519 key")
        problem = mode_problem(identity.ssh_key_file)
        if problem:
            problems.append(problem)
    except IdentityError as err:
        problems.append(str(err))
    except (ValueError, TypeError):
        problems.append(f"SSH key {identity.ssh_key_file} cannot be loaded")
    out["ssh"] = ssh_info
    out["problems"] = problems
    return out


# ---- status ------------------------------------------------------------------------
