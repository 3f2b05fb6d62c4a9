"""The operators' trusted public keys: one PEM file each in ``trusted_keys_dir``.

A key's id (the JWS ``kid``) is its file name without ``.pem``
(``ops-2026.pem`` -> ``ops-2026``). EC P-256 keys verify ES256, Ed25519 keys
verify EdDSA; nothing else is loaded. A file that holds a private key, that
others may write, or that cannot be parsed is skipped and reported.

Loading reads files (blocking): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
MAX_KEY_FILE = 16 * 1024


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    algorithm: str  # ES256 | EdDSA
    key: PublicKey
    path: Path
    fingerprint: str  # SHA-256 of the DER SubjectPublicKeyInfo, hex

    def describe(self) -> dict[str, str]:
        return {"kid": self.kid, "algorithm": self.algorithm, "file": str(self.path),
                "sha256": self.fingerprint}


@dataclass(frozen=True)
class TrustedKeys:
    """The keys found in one directory, and what was wrong with the other files."""

    directory: Path
    keys: Mapping[str, TrustedKey] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        return {"directory": str(self.directory),
                "keys": [k.describe() for k in self.keys.values()],
                "problems": list(self.problems)}


def fingerprint(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def parse_public_key(data: bytes) -> tuple[str, PublicKey]:
    """(algorithm, key) of a PEM public key. Raises ValueError saying what is wrong."""
    if b"PRIVATE KEY" in data:
        raise ValueError("holds a private key; only public keys belong here")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise ValueError("is not a PEM public key") from err
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"is an EC key on {key.curve.name}; expected P-256 (ES256)")
        return "ES256", key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA", key
    if isinstance(key, rsa.RSAPublicKey):
        kind = "an RSA key"
    elif isinstance(key, dsa.DSAPublicKey):
        kind = "a DSA key"
    else:  # X25519, Ed448, ...: name it without the library's class names
        kind = "a key of another type"
    raise ValueError(f"is {kind}; expected EC P-256 or Ed25519")


def _others_may_write(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def load_trusted_keys(directory: Path) -> TrustedKeys:
    """Every usable ``*.pem`` public key in ``directory`` (never raises)."""
    problems: list[str] = []
    keys: dict[str, TrustedKey] = {}
    try:
        dir_stat = directory.stat()
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return TrustedKeys(directory, {}, (f"{directory}: directory does not exist",))
    except OSError as err:
        return TrustedKeys(directory, {}, (f"{directory}: {err.strerror or err}",))
    if _others_may_write(dir_stat):
        return TrustedKeys(directory, {}, (
            f"{directory}: group or others may write it; no key is trusted from it",))
    for path in entries:
        if path.suffix != ".pem":
            continue
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if _others_may_write(st):
                raise ValueError("group or others may write it")
            if st.st_size > MAX_KEY_FILE:
                raise ValueError(f"is larger than {MAX_KEY_FILE} bytes")
            algorithm, key = parse_public_key(path.read_bytes())
        except OSError as err:
            problems.append(f"{path}: {err.strerror or err}")
            continue
        except ValueError as err:
            problems.append(f"{path}: {err}")
            continue
        keys[path.stem] = TrustedKey(path.stem, algorithm, key, path, fingerprint(key))
    return TrustedKeys(directory, keys, tuple(problems))
