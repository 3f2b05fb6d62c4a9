"""Password tokens and signed messages of local clients (HS256 with the client's key). Pure.

**Password token** (MQTT password, CoAP ``token`` query): a compact JWT, HS256,
signed with the client's key, claims ``iat`` and ``exp`` (seconds since the
epoch, both required) and optionally ``sub`` (must be the client id) and
``aud`` (must be the gateway id). Refused when expired, issued in the future,
older than ``token_max_age`` by ``iat``, or valid for longer than that.

**Signed message** (clients with ``signed = true``): the MQTT payload (or CoAP
body) is a compact JWS, HS256 with the client's key, over the claims
``{"topic": ..., "iat": ..., "payload": ...}``: the topic it is published to,
when it was signed, and the message itself as a string. Refused as
``forged`` (bad signature), ``wrong_topic``, ``stale`` (older than
``signed_lifespan``), ``from_future`` or ``replayed`` (the same signature seen
within the lifespan, see :class:`ReplayCache`).

Every check takes ``now`` (float seconds) so tests need no clock. The errors
never include the token or the key.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gatewayd.local.errors import AuthRefused, MessageRefused

ALGORITHM = "HS256"
_DECODE_OPTIONS: Any = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                        "verify_iat": False, "verify_aud": False, "verify_iss": False}


@dataclass(frozen=True)
class TokenPolicy:
    max_age: float
    clock_skew: float
    audience: str | None = None  # the gateway id, checked when the token has ``aud``


def mint_token(client: str, key: bytes, *, ttl: float, now: float | None = None,
               audience: str | None = None) -> str:
    """A password token for ``client`` valid ``ttl`` seconds from ``now``."""
    import jwt  # pyjwt loads cryptography: only when a token is handled

    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": client, "iat": t, "exp": t + max(1, int(ttl))}
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _number(claims: dict[str, Any], name: str) -> float | None:
    """The claim as seconds; None unless a finite number (JSON may carry NaN, Infinity)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None


def verify_token(token: str, *, client: str, key: bytes, policy: TokenPolicy,
                 now: float) -> dict[str, Any]:
    """The claims of a valid password token. Raises AuthRefused with the reason."""
    import jwt  # pyjwt loads cryptography: only when a token is handled

    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM],
                                            options=_DECODE_OPTIONS)
    except jwt.InvalidSignatureError:
        raise AuthRefused(f"client {client}: token signature does not verify",
                          client=client, reason="bad_signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthRefused(f"client {client}: token is not {ALGORITHM}", client=client,
                          reason="bad_token") from None
    except jwt.PyJWTError:
        raise AuthRefused(f"client {client}: password is not a valid token", client=client,
                          reason="bad_token") from None
    iat, exp = _number(claims, "iat"), _number(claims, "exp")
    if iat is None or exp is None:
        raise AuthRefused(f"client {client}: token lacks numeric iat and exp", client=client,
                          reason="bad_token")
    skew = policy.clock_skew
    if exp <= now - skew:
        raise AuthRefused(f"client {client}: token expired {now - exp:.0f}s ago",
                          client=client, reason="expired")
    if iat > now + skew:
        raise AuthRefused(f"client {client}: token issued {iat - now:.0f}s in the future",
                          client=client, reason="not_yet_valid")
    if now - iat > policy.max_age + skew or exp - iat > policy.max_age + skew:
        raise AuthRefused(f"client {client}: token older or longer-lived than "
                          f"{policy.max_age:g}s", client=client, reason="too_old")
    sub = claims.get("sub")
    if sub is not None and sub != client:
        raise AuthRefused(f"client {client}: token subject is another client", client=client,
                          reason="wrong_subject")
    aud = claims.get("aud")
    if aud is not None and policy.audience is not None and aud != policy.audience and not (
            isinstance(aud, list) and policy.audience in aud):
        raise AuthRefused(f"client {client}: token audience is not this gateway",
                          client=client, reason="wrong_audience")
    return claims


def sign_message(topic: str, payload: str, key: bytes, *, now: float | None = None) -> str:
    """A signed message (compact JWS) carrying ``payload`` for ``topic``."""
    import jwt  # pyjwt loads cryptography: only when a token is handled

    claims = {"topic": topic, "iat": time.time() if now is None else now, "payload": payload}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class SignedMessage:
    payload: bytes  # the inner message
    signature: str  # the JWS signature part: the replay cache's key
    iat: float


def verify_message(data: bytes, *, client: str, key: bytes, topic: str, lifespan: float,
                   skew: float, now: float) -> SignedMessage:
    """Check a signed message. Raises MessageRefused (unsigned, forged, wrong_topic,
    stale, from_future)."""
    import jwt  # pyjwt loads cryptography: only when a token is handled

    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if text.count(".") != 2:
        raise MessageRefused(f"client {client}: message on {topic} is not signed",
                             client=client, reason="unsigned")
    try:
        claims: dict[str, Any] = jwt.decode(text, key, algorithms=[ALGORITHM],
                                            options=_DECODE_OPTIONS)
    except jwt.InvalidSignatureError:
        raise MessageRefused(f"client {client}: signature on {topic} does not verify",
                             client=client, reason="forged") from None
    except jwt.PyJWTError:
        raise MessageRefused(f"client {client}: message on {topic} is not a valid "
                             f"{ALGORITHM} JWS", client=client, reason="forged") from None
    iat = _number(claims, "iat")
    inner = claims.get("payload")
    if iat is None or not isinstance(inner, str) or not isinstance(claims.get("topic"), str):
        raise MessageRefused(f"client {client}: signed message lacks topic, iat or payload",
                             client=client, reason="malformed")
    if claims["topic"] != topic:
        raise MessageRefused(f"client {client}: message signed for another topic than {topic}",
                             client=client, reason="wrong_topic")
    if iat < now - lifespan - skew:
        raise MessageRefused(f"client {client}: signed message on {topic} is "
                             f"{now - iat:.0f}s old (lifespan {lifespan:g}s)",
                             client=client, reason="stale")
    if iat > now + skew:
        raise MessageRefused(f"client {client}: signed message on {topic} is dated "
                             f"{iat - now:.0f}s in the future", client=client,
                             reason="from_future")
    return SignedMessage(inner.encode(), text.rsplit(".", 1)[1], iat)


class ReplayCache:
    """Signatures seen within the lifespan, per client; bounded.

    ``claim`` marks a signature as in use (raises ``replayed`` when it already
    is); ``release`` forgets it again when its message could not be stored, so
    a retry is not taken for a replay. Entries expire ``lifespan + skew``
    after their ``iat``; at ``limit`` live entries a client's new messages are
    refused (``replay_cache_full``) rather than weakening the check.
    """

    def __init__(self, *, lifespan: float, skew: float, limit: int = 65536) -> None:
        self.horizon = lifespan + skew
        self.limit = limit
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def seen(self, client: str, signature: str) -> bool:
        return signature in self._seen.get(client, {})

    def claim(self, client: str, signature: str, iat: float, now: float) -> None:
        entries = self._seen.setdefault(client, OrderedDict())
        self._expire(entries, now)
        if signature in entries:
            raise MessageRefused(f"client {client}: signed message replayed", client=client,
                                 reason="replayed")
        if len(entries) >= self.limit:
            raise MessageRefused(f"client {client}: more than {self.limit} signed messages "
                                 "within the lifespan", client=client,
                                 reason="replay_cache_full")
        entries[signature] = iat + self.horizon

    def release(self, client: str, signature: str) -> None:
        self._seen.get(client, OrderedDict()).pop(signature, None)

    def _expire(self, entries: OrderedDict[str, float], now: float) -> None:
        # Entries are mostly in iat order; stop at the first live one (a late entry
        # expires when it reaches the front: bounded by ``limit`` either way).
        while entries:
            sig, until = next(iter(entries.items()))
            if until > now:
                break
            del entries[sig]

    def forget_client(self, client: str) -> None:
        self._seen.pop(client, None)

    def size(self) -> int:
        return sum(len(e) for e in self._seen.values())
