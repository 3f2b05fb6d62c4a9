"""The signed token of a command: a compact JWS checked against the trusted keys.

Pure: the token bytes, the keys, the rules and the clock go in; the verified
claims come out, or :class:`~.errors.CommandRefused` with the named reason.
The checks run in this order, and the first that fails names the reason:

1. size and shape (three base64url parts, a JSON header) — ``malformed token``;
2. ``alg`` is ES256 or EdDSA (never ``none``, never HMAC) — ``algorithm not allowed``;
3. ``kid`` names a trusted key of that algorithm — ``unknown key``;
4. the signature verifies — ``bad signature`` (without ``kid`` every trusted key
   of the algorithm is tried, and a token none of them verifies is ``unknown key``:
   a forgery and a stranger's key cannot be told apart);
5. the payload is a JSON object with ``aud``, ``exp``, ``iat`` and ``jti``;
6. ``aud`` names this gateway — ``wrong audience``;
7. ``exp`` not passed, ``iat`` (and ``nbf``) not in the future, both within the
   allowed clock skew — ``expired``, ``not yet valid``;
8. ``exp - iat`` at most the maximum lifetime — ``lifetime too long``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.exceptions import DecodeError, InvalidSignatureError

from . import errors as r
from .errors import CommandRefused
from .keys import TrustedKey, TrustedKeys

MAX_TOKEN: Final = 8192  # bytes of a command message
MAX_JTI: Final = 128
ALGORITHMS: Final = ("ES256", "EdDSA")

_JWS = jwt.PyJWS(options={"verify_signature": True})


@dataclass(frozen=True)
class TokenRules:
    audience: str  # the gateway id
    max_lifetime: float  # seconds, exp - iat
    clock_skew: float  # seconds of tolerance on exp, iat, nbf


@dataclass(frozen=True)
class VerifiedToken:
    kid: str
    algorithm: str
    claims: Mapping[str, Any]
    jti: str
    iat: float
    exp: float


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    return json.loads(raw, parse_constant=_reject_constant)


def _text(token: bytes) -> str:
    if len(token) > MAX_TOKEN:
        raise CommandRefused(r.MALFORMED_TOKEN, f"larger than {MAX_TOKEN} bytes")
    try:
        text = token.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CommandRefused(r.MALFORMED_TOKEN, "not ASCII text") from None
    if text.count(".") != 2:
        raise CommandRefused(r.MALFORMED_TOKEN, "expected a compact JWS (three parts)")
    return text


def peek_claims(token: bytes) -> dict[str, Any] | None:
    """The claims of a token without verifying anything (for the result and the audit
    record of a refused token, marked unverified there), or None."""
    try:
        claims = _b64json(_text(token).split(".")[1])
    except (CommandRefused, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def peek_jti(token: bytes) -> str | None:
    """The unverified ``jti`` of a token, when it is a sensible one, or None."""
    claims = peek_claims(token)
    jti = claims.get("jti") if claims is not None else None
    return jti if isinstance(jti, str) and 0 < len(jti) <= MAX_JTI and jti.isprintable() \
        else None


def _header(text: str) -> dict[str, Any]:
    try:
        header = _b64json(text.split(".")[0])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CommandRefused(r.MALFORMED_TOKEN, "header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise CommandRefused(r.MALFORMED_TOKEN, "header is not a JSON object")
    return header


def _candidates(header: Mapping[str, Any], keys: TrustedKeys) -> list[TrustedKey]:
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise CommandRefused(r.ALGORITHM_NOT_ALLOWED,
                             f"alg {alg!r}; expected one of {', '.join(ALGORITHMS)}")
    if "crit" in header:
        raise CommandRefused(r.MALFORMED_TOKEN, "critical header parameters are not supported")
    kid = header.get("kid")
    if kid is not None:
        if not isinstance(kid, str):
            raise CommandRefused(r.MALFORMED_TOKEN, "kid is not a string")
        key = keys.keys.get(kid)
        if key is None:
            raise CommandRefused(r.UNKNOWN_KEY, f"no trusted key {kid[:64]!r}")
        if key.algorithm != alg:
            raise CommandRefused(r.ALGORITHM_NOT_ALLOWED,
                                 f"key {kid!r} verifies {key.algorithm}, the token says {alg}")
        return [key]
    found = [k for k in keys.keys.values() if k.algorithm == alg]
    if not found:
        raise CommandRefused(r.UNKNOWN_KEY, f"no trusted {alg} key")
    return found


def _verify_signature(text: str, header: Mapping[str, Any],
                      candidates: list[TrustedKey]) -> tuple[TrustedKey, bytes]:
    alg = str(header["alg"])
    for key in candidates:
        try:
            decoded = _JWS.decode_complete(text, key.key, algorithms=[alg])
        except InvalidSignatureError:
            continue
        except DecodeError as err:
            raise CommandRefused(r.MALFORMED_TOKEN, str(err)) from None
        payload = decoded["payload"]
        assert isinstance(payload, bytes)
        return key, payload
    if "kid" in header:
        raise CommandRefused(r.BAD_SIGNATURE, f"signature does not verify with key "
                                              f"{candidates[0].kid!r}")
    raise CommandRefused(r.UNKNOWN_KEY, f"no trusted {alg} key verifies the signature")


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise CommandRefused(r.MISSING_CLAIM, name)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise CommandRefused(r.MALFORMED_TOKEN, f"{name} is not a number of seconds")
    return float(value)


def check_claims(claims: Mapping[str, Any], rules: TokenRules, *, now: float) -> tuple[
        str, float, float]:
    """(jti, iat, exp) of claims that pass steps 5-8; raises CommandRefused."""
    if "aud" not in claims:
        raise CommandRefused(r.MISSING_CLAIM, "aud")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if audiences is None or not all(isinstance(a, str) for a in audiences):
        raise CommandRefused(r.MALFORMED_TOKEN, "aud is not a string or a list of strings")
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    jti = claims.get("jti")
    if jti is None:
        raise CommandRefused(r.MISSING_CLAIM, "jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI or not jti.isprintable():
        raise CommandRefused(r.MALFORMED_TOKEN,
                             f"jti must be a printable string of 1 to {MAX_JTI} characters")
    if rules.audience not in audiences:
        raise CommandRefused(r.WRONG_AUDIENCE, f"token is for {audiences!r}, "
                                               f"this gateway is {rules.audience!r}")
    skew = rules.clock_skew
    if now > exp + skew:
        raise CommandRefused(r.EXPIRED, f"expired {now - exp:.0f}s ago")
    if iat > now + skew:
        raise CommandRefused(r.NOT_YET_VALID, f"issued {iat - now:.0f}s in the future")
    if nbf is not None and nbf > now + skew:
        raise CommandRefused(r.NOT_YET_VALID, f"not before {nbf - now:.0f}s from now")
    if exp < iat:
        raise CommandRefused(r.MALFORMED_TOKEN, "exp is before iat")
    if exp - iat > rules.max_lifetime:
        raise CommandRefused(r.LIFETIME_TOO_LONG, f"{exp - iat:.0f}s; at most "
                                                  f"{rules.max_lifetime:.0f}s allowed")
    return jti, iat, exp


def verify_token(token: bytes, keys: TrustedKeys, rules: TokenRules, *,
                 now: float) -> VerifiedToken:
    """The verified token; raises CommandRefused naming the first check that fails."""
    text = _text(token)
    header = _header(text)
    key, payload = _verify_signature(text, header, _candidates(header, keys))
    try:
        claims = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise CommandRefused(r.MALFORMED_TOKEN, "payload is not JSON") from None
    if not isinstance(claims, dict):
        raise CommandRefused(r.MALFORMED_TOKEN, "payload is not a JSON object")
    jti, iat, exp = check_claims(claims, rules, now=now)
    return VerifiedToken(kid=key.kid, algorithm=key.algorithm, claims=claims, jti=jti,
                         iat=iat, exp=exp)
