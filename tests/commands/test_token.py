"""The token check alone: every refusal reason, in order, with a fixed clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.commands import errors as r
from gatewayd.commands.errors import CommandRefused
from gatewayd.commands.keys import TrustedKeys, load_trusted_keys
from gatewayd.commands.token import MAX_TOKEN, TokenRules, peek_jti, verify_token
from tests.commands.command_support import (
    GATEWAY,
    Operator,
    alg_none,
    claims,
    eddsa,
    es256,
    hs256_with_public_key,
    tampered,
    write_cmd,
    write_trusted,
)

NOW = 1_800_000_000.0
RULES = TokenRules(audience=GATEWAY, max_lifetime=300.0, clock_skew=30.0)
CMD = write_cmd("boiler", "setpoint", 42)


@pytest.fixture(scope="module")
def ops() -> tuple[Operator, Operator, Operator]:
    return es256("ops"), eddsa("ops-ed"), es256("rogue")


@pytest.fixture
def keys(tmp_path: Path, ops: tuple[Operator, Operator, Operator]) -> TrustedKeys:
    return load_trusted_keys(write_trusted(tmp_path / "trusted", ops[0], ops[1]))


def refused(token: bytes, keys: TrustedKeys, *, now: float = NOW,
            rules: TokenRules = RULES) -> CommandRefused:
    with pytest.raises(CommandRefused) as info:
        verify_token(token, keys, rules, now=now)
    return info.value


def test_valid_es256_and_eddsa_tokens_verify(keys: TrustedKeys, ops: tuple[Operator, ...]) -> None:
    for op in ops[:2]:
        c = claims(CMD, scope="write:boiler/setpoint", now=NOW, jti=f"j-{op.kid}")
        token = verify_token(op.sign(c), keys, RULES, now=NOW)
        assert (token.kid, token.algorithm, token.jti) == (op.kid, op.algorithm, f"j-{op.kid}")
        assert token.claims["cmd"] == CMD
        # without kid: every trusted key of the algorithm is tried
        assert verify_token(op.sign(c, kid=None), keys, RULES, now=NOW).kid == op.kid


def test_forged_signature_is_bad_signature(keys: TrustedKeys, ops: tuple[Operator, ...]) -> None:
    token = ops[0].sign(claims(CMD, scope="write:boiler/setpoint", now=NOW))
    err = refused(tampered(token, cmd=write_cmd("boiler", "setpoint", 80)), keys)
    assert (err.status, err.reason) == ("refused", r.BAD_SIGNATURE)
    # a valid signature by another key presented under a trusted kid
    err = refused(ops[2].sign(claims(CMD, scope="write:boiler/setpoint", now=NOW), kid="ops"),
                  keys)
    assert err.reason == r.BAD_SIGNATURE


def test_untrusted_key_is_unknown_key(keys: TrustedKeys, ops: tuple[Operator, ...]) -> None:
    c = claims(CMD, scope="write:boiler/setpoint", now=NOW)
    assert refused(ops[2].sign(c), keys).reason == r.UNKNOWN_KEY
    assert refused(ops[2].sign(c, kid=None), keys).reason == r.UNKNOWN_KEY


def test_alg_none_and_hmac_confusion_are_refused(keys: TrustedKeys,
                                                 ops: tuple[Operator, ...]) -> None:
    c = claims(CMD, scope="write:boiler/setpoint", now=NOW)
    assert refused(alg_none(c, "ops"), keys).reason == r.ALGORITHM_NOT_ALLOWED
    hs = hs256_with_public_key(c, ops[0].public_pem, "ops")
    err = refused(hs, keys)
    assert err.reason == r.ALGORITHM_NOT_ALLOWED and "HS256" in err.detail
    # an EdDSA key never verifies an ES256 claim of the same kid
    assert refused(ops[0].sign(c, kid="ops-ed"), keys).reason == r.ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize("token", [
    b"", b"garbage", b"a.b", b"a.b.c.d", "é.é.é".encode(), b"!!!.e30.sig",
    b"W10.e30.sig",  # header is a JSON array
    b"x" * (MAX_TOKEN + 1),
])
def test_malformed_tokens(keys: TrustedKeys, token: bytes) -> None:
    assert refused(token, keys).reason == r.MALFORMED_TOKEN


def test_claims_checked_after_the_signature(keys: TrustedKeys, ops: tuple[Operator, ...]) -> None:
    op = ops[0]
    scope = "write:boiler/setpoint"
    assert refused(op.sign(claims(CMD, scope=scope, now=NOW, aud="gw-other")),
                   keys).reason == r.WRONG_AUDIENCE
    assert verify_token(op.sign(claims(CMD, scope=scope, now=NOW, aud=["x", GATEWAY])),
                        keys, RULES, now=NOW)
    expired = op.sign(claims(CMD, scope=scope, now=NOW - 200, lifetime=120))
    assert refused(expired, keys).reason == r.EXPIRED
    # within the clock skew an expired token still passes
    assert verify_token(op.sign(claims(CMD, scope=scope, now=NOW - 140, lifetime=120)),
                        keys, RULES, now=NOW)
    future = op.sign(claims(CMD, scope=scope, now=NOW + 60))
    assert refused(future, keys).reason == r.NOT_YET_VALID
    nbf = op.sign(claims(CMD, scope=scope, now=NOW, nbf=NOW + 100))
    assert refused(nbf, keys).reason == r.NOT_YET_VALID
    long_lived = op.sign(claims(CMD, scope=scope, now=NOW, lifetime=3600))
    assert refused(long_lived, keys).reason == r.LIFETIME_TOO_LONG
    for missing in ("aud", "exp", "iat", "jti"):
        c = claims(CMD, scope=scope, now=NOW)
        del c[missing]
        err = refused(op.sign(c), keys)
        assert (err.reason, err.detail) == (r.MISSING_CLAIM, missing)
    for bad in ({"exp": "soon"}, {"iat": True}, {"jti": ""}, {"jti": "x" * 129},
                {"aud": 5}):
        c = {**claims(CMD, scope=scope, now=NOW), **bad}
        assert refused(op.sign(c), keys).reason == r.MALFORMED_TOKEN, bad


def test_non_object_payload_is_malformed(keys: TrustedKeys, ops: tuple[Operator, ...]) -> None:
    import jwt

    token = jwt.api_jws.encode(b"[1,2]", ops[0].key, algorithm="ES256",
                               headers={"kid": "ops"}).encode()
    assert refused(token, keys).reason == r.MALFORMED_TOKEN


def test_peek_jti_reads_without_verifying(ops: tuple[Operator, ...]) -> None:
    token = ops[2].sign(claims(CMD, scope="x", now=NOW, jti="abc-1"))
    assert peek_jti(token) == "abc-1"
    assert peek_jti(b"nonsense") is None
    assert peek_jti(tampered(token, jti="\x00bad")) is None


def test_trusted_keys_skip_what_is_not_a_usable_public_key(tmp_path: Path,
                                                          ops: tuple[Operator, ...]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    d = write_trusted(tmp_path / "t", ops[0])
    (d / "private.pem").write_bytes(ops[0].key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "p384.pem").write_bytes(ec.generate_private_key(ec.SECP384R1()).public_key()
                                 .public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    (d / "rsa.pem").write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (d / "junk.pem").write_text("hello")
    (d / "writable.pem").write_bytes(ops[1].public_pem)
    (d / "writable.pem").chmod(0o666)
    (d / "README").write_text("not a key")
    keys = load_trusted_keys(d)
    assert list(keys.keys) == ["ops"]
    problems = "\n".join(keys.problems)
    assert len(keys.problems) == 5
    for text in ("private.pem: holds a private key", "p384.pem: is an EC key on secp384r1",
                 "rsa.pem: is an RSA key; expected EC P-256 or Ed25519",
                 "junk.pem: is not a PEM public key",
                 "writable.pem: group or others may write it"):
        assert text in problems
    d.chmod(0o777)
    assert load_trusted_keys(d).keys == {}
    assert load_trusted_keys(tmp_path / "missing").problems[0].endswith("does not exist")
