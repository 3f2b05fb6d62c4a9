"""TLS context and MQTT credentials of one uplink, built afresh at each connect.

Blocking (reads small files): call through ``asyncio.to_thread``. Every
problem raises UplinkError naming the file, so an operator sees which one to
install or fix; the uplink retries with backoff, so a file installed later is
picked up. Secrets (password, token, key) never appear in a message.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.schema import IdentityConfig
from gatewayd.errors import UplinkError
from gatewayd.uplink.config import UplinkConfig


@dataclass(frozen=True)
class Credentials:
    """What one connect attempt presents to the broker."""

    tls: ssl.SSLContext | None
    username: str | None
    password: str | None = None

    def __repr__(self) -> str:  # never show the password
        hidden = "None" if self.password is None else "'***'"
        return f"Credentials(tls={self.tls is not None}, username={self.username!r}, " \
               f"password={hidden})"


def _read(path: Path, what: str, uplink: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UplinkError(f"cannot read {what} {path}: {reason}", uplink=uplink) from err


def tls_context(cfg: UplinkConfig, identity: IdentityConfig) -> ssl.SSLContext:
    """A client context that verifies the broker (always) and, for mtls, presents
    the gateway certificate.

    Trusts ``cfg.ca_file`` alone when set, else the system CAs. Hostname
    checking is on; there is no way to turn verification off.
    """
    uplink = cfg.name
    try:
        if cfg.ca_file is not None:
            _read(cfg.ca_file, "CA file", uplink)
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.ca_file))
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    except ssl.SSLError as err:
        raise UplinkError(f"CA file {cfg.ca_file} holds no usable certificate: {err.reason}",
                          uplink=uplink) from err
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.auth.type == "mtls":
        cert = cfg.auth.cert_file or identity.cert_file
        key = cfg.auth.key_file or identity.key_file
        _read(cert, "certificate", uplink)
        _read(key, "private key", uplink)
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as err:
            raise UplinkError(f"certificate {cert} and key {key} cannot be used together: "
                              f"{err.reason or err}", uplink=uplink) from err
    return ctx


def jwt_token(cfg: UplinkConfig, *, gateway_id: str, identity: IdentityConfig,
              now: float | None = None) -> str:
    """A fresh ES256 token signed with the gateway key: iss = sub = gateway id,
    aud = ``jwt_audience`` when set, iat = now, exp = now + ``jwt_ttl``."""
    # Imported here: only jwt auth needs them (about 8 MiB a gateway need not carry).
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_file = cfg.auth.key_file or identity.key_file
    data = _read(key_file, "private key", cfg.name)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise UplinkError(f"private key {key_file} cannot be loaded (expected an unencrypted "
                          "PEM key)", uplink=cfg.name) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UplinkError(f"private key {key_file} is not an EC P-256 key (ES256 needs one)",
                          uplink=cfg.name)
    iat = int(time.time() if now is None else now)
    claims: dict[str, object] = {"iss": gateway_id, "sub": gateway_id, "iat": iat,
                                 "exp": iat + int(cfg.auth.jwt_ttl)}
    if cfg.auth.jwt_audience:
        claims["aud"] = cfg.auth.jwt_audience
    return jwt.encode(claims, key, algorithm="ES256")


def credentials(cfg: UplinkConfig, *, gateway_id: str, identity: IdentityConfig) -> Credentials:
    """TLS context and username/password for the next connect attempt.

    Raises UplinkError naming the file that is missing, unreadable or unusable.
    """
    tls = tls_context(cfg, identity) if cfg.tls else None
    auth = cfg.auth
    if auth.type == "password":
        assert auth.password_file is not None  # the config schema requires it
        raw = _read(auth.password_file, "password file", cfg.name)
        try:
            password = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise UplinkError(f"password file {auth.password_file} is not UTF-8 text",
                              uplink=cfg.name) from err
        if not password:
            raise UplinkError(f"password file {auth.password_file} is empty", uplink=cfg.name)
        return Credentials(tls, auth.username, password)
    if auth.type == "jwt":
        token = jwt_token(cfg, gateway_id=gateway_id, identity=identity)
        return Credentials(tls, auth.username or gateway_id, token)
    return Credentials(tls, None)
