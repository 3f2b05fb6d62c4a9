"""Property tests of command token parsing: garbage gets a named refusal, never
another exception, and a token is accepted only when every rule holds.

Inputs range from raw bytes, through compact-JWS-shaped text with arbitrary JSON
in each part, to tokens properly signed by a trusted key whose claims are
arbitrary JSON (so the claim checks and the command parser see the garbage).
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.commands import errors as r
from gatewayd.commands.errors import CommandRefused
from gatewayd.commands.keys import TrustedKeys, load_trusted_keys
from gatewayd.commands.policy import check_scope, parse_command
from gatewayd.commands.token import (
    MAX_JTI,
    TokenRules,
    VerifiedToken,
    peek_claims,
    peek_jti,
    verify_token,
)
from tests.commands.command_support import GATEWAY, Operator, eddsa, es256, write_trusted
from tests.support.properties import examples

NOW = 1_800_000_000.0
RULES = TokenRules(audience=GATEWAY, max_lifetime=300.0, clock_skew=30.0)
OPS = (es256("ops"), eddsa("ops-ed"))
STRANGER = es256("ops")  # same kid as a trusted key, another key pair

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)

# Claims near the valid ones: each claim present or not, of the right type or not, with
# times around the edges of the rules.
times = st.one_of(st.sampled_from([NOW, NOW - 31, NOW + 31, NOW - 300, NOW + 299, NOW - 1e9,
                                   0, -1, 1e300, 2**64]),
                  st.floats(NOW - 1000, NOW + 1000), json_values)
commands = st.one_of(
    st.fixed_dictionaries({"action": st.just("write"),
                           "device": st.sampled_from(["boiler", "", "a/b", "x" * 200]),
                           "point": st.sampled_from(["setpoint", "", "p*"]),
                           "value": json_values}),
    st.fixed_dictionaries({"action": st.just("read"), "device": st.text(max_size=8),
                           "point": st.text(max_size=8)}),
    st.fixed_dictionaries({"action": st.just("tunnel.open"),
                           "ttl": st.one_of(st.floats(allow_nan=True), json_values)}),
    st.just({"action": "tunnel.close"}),
    st.dictionaries(st.sampled_from(["action", "device", "point", "value", "ttl", "x"]),
                    json_values, max_size=5),
    json_values,
)
ODD_CLAIMS = {
    "aud": st.one_of(st.just([GATEWAY, "other"]), st.just("gw-other"), json_values),
    "iat": times, "exp": times, "nbf": times,
    "jti": st.one_of(st.text(max_size=10), st.just("j" * (MAX_JTI + 1)), json_values),
    "scope": st.one_of(st.sampled_from(["write:*", "read:* tunnel:*", "*", "", "write:boiler"]),
                       st.lists(st.text(max_size=20), max_size=3), json_values),
    "cmd": commands, "sub": json_values,
}


@st.composite
def claims(draw: st.DrawFn) -> dict[str, Any]:
    """Valid claims (times around the edges of the rules) with some claims dropped or
    replaced: each change is drawn so that it shrinks towards the valid claims."""
    iat = NOW + draw(st.integers(-400, 400))
    out: dict[str, Any] = {
        "aud": GATEWAY, "iat": iat, "exp": iat + draw(st.integers(-10, 400)),
        "jti": draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                            max_size=10)),
        "scope": "write:boiler/setpoint",
        "cmd": {"action": "write", "device": "boiler", "point": "setpoint", "value": 42}}
    for name, odd in ODD_CLAIMS.items():
        change = draw(st.integers(0, 99))
        if change >= 96:
            out.pop(name, None)
        elif change >= 88:
            out[name] = draw(odd)
    return out


headers = st.fixed_dictionaries({}, optional={
    "alg": st.one_of(st.sampled_from(["ES256", "EdDSA", "none", "HS256", "RS256"]), json_values),
    "kid": st.one_of(st.sampled_from(["ops", "ops-ed", "nobody", ""]), json_values),
    "typ": st.just("JWT"), "crit": json_values,
})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


@pytest.fixture(scope="module")
def keys() -> Iterator[TrustedKeys]:
    with tempfile.TemporaryDirectory(prefix="gwkeys-") as d:
        yield load_trusted_keys(write_trusted(Path(d) / "trusted", *OPS))


def refusal_or_token(token: bytes, keys: TrustedKeys) -> VerifiedToken | None:
    """The verified token, or None after checking that the refusal is a named one."""
    try:
        verified = verify_token(token, keys, RULES, now=NOW)
    except CommandRefused as err:
        assert err.reason in r.REFUSALS, err.reason
        return None
    assert peek_claims(token) == dict(verified.claims)
    return verified


def assert_rules_hold(token: VerifiedToken) -> None:
    """What an accepted token must satisfy, restated from docs/commands.md."""
    c = token.claims
    aud = c["aud"]
    assert GATEWAY == aud or (isinstance(aud, list) and GATEWAY in aud)
    assert math.isfinite(token.iat) and math.isfinite(token.exp)
    assert token.iat <= NOW + RULES.clock_skew
    assert NOW <= token.exp + RULES.clock_skew
    assert 0 <= token.exp - token.iat <= RULES.max_lifetime
    assert isinstance(token.jti, str) and 0 < len(token.jti) <= MAX_JTI
    assert token.jti.isprintable()
    if "nbf" in c and c["nbf"] is not None:
        assert c["nbf"] <= NOW + RULES.clock_skew


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_by_name(keys: TrustedKeys, data: bytes) -> None:
    assert refusal_or_token(data, keys) is None
    peek_claims(data)
    assert peek_jti(data) is None or isinstance(peek_jti(data), str)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.one_of(headers, json_values), st.one_of(claims(), json_values),
       st.one_of(st.binary(max_size=80).map(b64), st.text(max_size=20)),
       st.sampled_from(["", " ", "\n", "=", "."]))
def test_jws_shaped_text_with_any_parts_is_refused_by_name(
        keys: TrustedKeys, header: Any, payload: Any, signature: str, noise: str) -> None:
    token = f"{b64json(header)}.{b64json(payload)}{noise}.{signature}".encode()
    assert refusal_or_token(token, keys) is None


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.sampled_from((*OPS, STRANGER)), claims(), st.booleans())
def test_signed_tokens_with_any_claims_are_accepted_only_when_valid(
        keys: TrustedKeys, op: Operator, payload: dict[str, Any], with_kid: bool) -> None:
    token = op.sign(payload, kid="" if with_kid else None)
    verified = refusal_or_token(token, keys)
    if verified is None:
        return
    assert op is not STRANGER
    assert_rules_hold(verified)
    # What follows the token check: the command and its scope, refused by name or valid.
    try:
        command = parse_command(verified.claims, max_tunnel_ttl=3600.0)
        check_scope(verified.claims, command)
    except CommandRefused as err:
        assert err.reason in r.REFUSALS, err.reason


@pytest.mark.property
@settings(max_examples=examples(200))
@given(st.sampled_from(OPS), st.integers(0, 200), st.integers(0, 255))
def test_a_changed_byte_of_a_valid_token_is_refused_or_harmless(
        keys: TrustedKeys, op: Operator, at: int, byte: int) -> None:
    payload = {"aud": GATEWAY, "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j-1",
               "scope": "write:boiler/setpoint",
               "cmd": {"action": "write", "device": "boiler", "point": "setpoint", "value": 42}}
    token = bytearray(op.sign(payload))
    at %= len(token)
    token[at] = byte
    verified = refusal_or_token(bytes(token), keys)
    if verified is not None:
        # base64url has spare bits in its last character, and padding/whitespace is
        # tolerated: whatever verifies still carries exactly the signed claims.
        assert dict(verified.claims) == payload
