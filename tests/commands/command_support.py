"""Operator keys and tokens for the command tests: what a central command service
would produce, made with pyjwt and cryptography, plus the classic forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

GATEWAY = "gw-test"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Operator:
    kid: str
    algorithm: str  # ES256 | EdDSA
    key: PrivateKey

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict[str, Any], *, kid: str | None = "", **headers: Any) -> bytes:
        """A compact JWS of ``claims``; ``kid=None`` leaves the kid out."""
        hdr = dict(headers)
        if kid is not None:
            hdr["kid"] = kid or self.kid
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=hdr).encode()


def es256(kid: str) -> Operator:
    return Operator(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def eddsa(kid: str) -> Operator:
    return Operator(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def write_trusted(directory: Path, *operators: Operator) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for op in operators:
        path = directory / f"{op.kid}.pem"
        path.write_bytes(op.public_pem)
        path.chmod(0o644)
    return directory


def claims(cmd: dict[str, Any], *, scope: str, aud: str | list[str] = GATEWAY,
           now: float | None = None, lifetime: float = 120.0, jti: str | None = None,
           **extra: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    out: dict[str, Any] = {"aud": aud, "iat": int(now), "exp": int(now + lifetime),
                           "jti": jti or uuid.uuid4().hex, "scope": scope, "cmd": cmd,
                           "sub": "operator@example.net"}
    out.update(extra)
    return out


def write_cmd(device: str, point: str, value: Any) -> dict[str, Any]:
    return {"action": "write", "device": device, "point": point, "value": value}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def tampered(token: bytes, **changes: Any) -> bytes:
    """The token with its payload changed and the original signature kept."""
    head, payload, sig = token.decode().split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return f"{head}.{_b64json(body)}.{sig}".encode()


def alg_none(claims_: dict[str, Any], kid: str) -> bytes:
    return f"{_b64json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64json(claims_)}.".encode()


def hs256_with_public_key(claims_: dict[str, Any], public_pem: bytes, kid: str) -> bytes:
    """Algorithm confusion: an HMAC token keyed with the operator's public key."""
    signing_input = f"{_b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}." \
                    f"{_b64json(claims_)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}".encode()
