"""Pure parts of the uplink: the acknowledged cursor, backoff, pacing, credentials."""

from __future__ import annotations

import random
import ssl
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatewayd.config.schema import IdentityConfig
from gatewayd.errors import UplinkError
from gatewayd.uplink.config import AuthConfig
from gatewayd.uplink.connection import connect_failure
from gatewayd.uplink.credentials import credentials, jwt_token
from gatewayd.uplink.cursor import UplinkCursor
from gatewayd.uplink.pacing import Backoff, TokenBucket
from tests.peers.pki import Pki
from tests.uplink.helpers import GATEWAY, uplink_config

# ------------------------------------------------------------------ cursor


def test_cursor_advances_only_over_a_contiguous_acknowledged_prefix() -> None:
    c = UplinkCursor(100)
    a = c.add(150, 1)
    b = c.add(200, 1)
    d = c.add(260, 1)
    assert c.ack(d) is False  # the newest first: nothing before it is acknowledged
    assert c.acked == 100
    assert c.ack(b) is False
    assert c.acked == 100
    assert c.ack(a) is True  # now 150, 200 and 260 are all covered
    assert c.acked == 260
    assert c.pending == 0


def test_cursor_waits_for_every_part_of_a_split_batch() -> None:
    c = UplinkCursor(0)
    a = c.add(10, 3)
    b = c.add(20, 1)
    assert c.ack(b) is False
    assert c.ack(a) is False
    assert c.ack(a) is False
    assert c.acked == 0
    assert c.ack(a) is True
    assert c.acked == 20
    with pytest.raises(KeyError):
        c.ack(a)  # already complete


def test_cursor_batch_without_parts_counts_as_acknowledged() -> None:
    c = UplinkCursor(5)
    a = c.add(10, 1)
    c.add(30, 0)  # rows this uplink does not carry: nothing to send
    assert c.acked == 5
    assert c.ack(a) is True
    assert c.acked == 30
    c.add(40, 0)
    assert c.acked == 40


def test_cursor_refuses_going_backwards() -> None:
    c = UplinkCursor(50)
    with pytest.raises(ValueError, match="before the previous one"):
        c.add(49, 1)
    with pytest.raises(ValueError, match="at least 0 parts"):
        c.add(60, -1)


def test_cursor_random_ack_orders_match_a_model() -> None:
    rng = random.Random(7)
    for _ in range(200):
        c = UplinkCursor(0)
        batches = []
        upto = 0
        for _ in range(rng.randint(1, 12)):
            upto += rng.randint(0, 5)
            parts = rng.randint(0, 3)
            batches.append((c.add(upto, parts), upto, parts))
        acks = [(tok, i) for i, (tok, _, parts) in enumerate(batches) for _ in range(parts)]
        rng.shuffle(acks)
        left = [parts for _, _, parts in batches]
        for tok, i in acks:
            c.ack(tok)
            left[i] -= 1
            done = 0
            for j, (_, up, _) in enumerate(batches):
                if left[j]:
                    break
                done = up
            assert c.acked == done
        assert c.acked == upto


# ------------------------------------------------------------------ backoff, pacing


def test_backoff_full_jitter_between_initial_and_a_doubling_cap() -> None:
    b = Backoff(0.5, 8.0, rng=random.Random(1))
    caps = []
    for _ in range(8):
        cap = b.cap()
        delay = b.next_delay()
        assert 0.5 <= delay <= cap
        caps.append(cap)
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert b.attempts == 8
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_spreads_a_fleet() -> None:
    delays = [Backoff(1.0, 60.0, rng=random.Random(seed)) for seed in range(50)]
    for b in delays:
        for _ in range(6):
            last = b.next_delay()
    spread = sorted(round(b.next_delay(), 2) for b in delays)
    assert len(set(spread)) == 50  # 50 gateways, 50 different retry moments
    assert all(1.0 <= d <= 60.0 for d in spread)
    assert last >= 1.0


def test_token_bucket_paces_to_the_rate_after_the_burst() -> None:
    bucket = TokenBucket(1000, 500, now=0.0)
    assert bucket.take(500, now=0.0) == 0.0  # the burst
    assert bucket.take(500, now=0.0) == pytest.approx(0.5)
    # Whoever waited as told finds the bucket empty, not in debt.
    assert bucket.take(250, now=0.5) == pytest.approx(0.25)
    assert bucket.take(100, now=10.0) == 0.0  # refilled, capped at the burst


def test_token_bucket_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(0, 500, now=0.0)
    assert all(bucket.take(10_000, now=0.0) == 0.0 for _ in range(10))


def test_token_bucket_long_run_rate() -> None:
    bucket = TokenBucket(2000, 500, now=0.0)
    now = 0.0
    sent = 0
    while sent < 100_000:
        now += bucket.take(700, now=now)
        sent += 700
    assert now == pytest.approx((100_000 - 500) / 2000, rel=0.01)


# ------------------------------------------------------------------ credentials


def _identity(pki: Pki) -> IdentityConfig:
    return IdentityConfig(key_file=pki.client.key, cert_file=pki.client.cert)


def test_jwt_is_es256_signed_by_the_gateway_key_with_the_configured_claims(pki: Pki) -> None:
    cfg = uplink_config("mqtts://broker.example.net:8883", auth=AuthConfig(
        type="jwt", jwt_ttl=600.0, jwt_audience="central"))
    token = jwt_token(cfg, gateway_id=GATEWAY, identity=_identity(pki), now=1_800_000_000)
    public = serialization.load_pem_private_key(pki.client.key.read_bytes(), None).public_key()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, public, algorithms=["ES256"], audience="central",  # type: ignore[arg-type]
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iss": GATEWAY, "sub": GATEWAY, "aud": "central", "iat": 1_800_000_000,
                      "exp": 1_800_000_600}
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["ES256"], audience="central")


def test_jwt_credentials_carry_a_token_made_now(pki: Pki) -> None:
    cfg = uplink_config("mqtts://b.example:8883", auth=AuthConfig(type="jwt", jwt_ttl=300.0))
    public = serialization.load_pem_private_key(pki.client.key.read_bytes(), None).public_key()
    before = int(time.time())
    creds = credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))
    after = int(time.time())
    assert creds.username == GATEWAY
    assert creds.password is not None
    claims = jwt.decode(creds.password, public, algorithms=["ES256"])  # type: ignore[arg-type]
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + 300
    assert "aud" not in claims
    assert "***" in repr(creds) and creds.password not in repr(creds)


def test_jwt_key_must_be_p256(tmp_path: Path, pki: Pki) -> None:
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cfg = uplink_config("mqtts://b.example:8883", auth=AuthConfig(type="jwt", key_file=rsa_key))
    with pytest.raises(UplinkError, match=f"private key {rsa_key} is not an EC P-256 key"):
        credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    cfg = uplink_config("mqtts://b.example:8883", auth=AuthConfig(type="jwt", key_file=garbage))
    with pytest.raises(UplinkError, match=f"private key {garbage} cannot be loaded"):
        credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))


@pytest.mark.parametrize("what", ["cert", "key"])
def test_missing_mtls_file_is_named(tmp_path: Path, pki: Pki, what: str) -> None:
    missing = tmp_path / "absent.pem"
    ident = IdentityConfig(key_file=missing if what == "key" else pki.client.key,
                           cert_file=missing if what == "cert" else pki.client.cert)
    cfg = uplink_config("mqtts://b.example:8883", auth=AuthConfig(type="mtls"), ca_file=pki.ca)
    label = "certificate" if what == "cert" else "private key"
    with pytest.raises(UplinkError, match=f"cannot read {label} {missing}: No such file"):
        credentials(cfg, gateway_id=GATEWAY, identity=ident)


def test_mismatched_cert_and_key_are_named(pki: Pki) -> None:
    ident = IdentityConfig(key_file=pki.other_client.key, cert_file=pki.client.cert)
    cfg = uplink_config("mqtts://b.example:8883", auth=AuthConfig(type="mtls"), ca_file=pki.ca)
    with pytest.raises(UplinkError, match=f"certificate {pki.client.cert} and key "
                                          f"{pki.other_client.key} cannot be used together"):
        credentials(cfg, gateway_id=GATEWAY, identity=ident)


def test_unreadable_key_is_named_and_the_message_keeps_secrets_out(tmp_path: Path,
                                                                   pki: Pki) -> None:
    pw = tmp_path / "pw"
    pw.write_text("  hunter2\n")
    cfg = uplink_config("mqtt://b.example:1883", auth=AuthConfig(
        type="password", username="u", password_file=pw))
    creds = credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))
    assert (creds.tls, creds.username, creds.password) == (None, "u", "hunter2")
    assert "hunter2" not in repr(creds)
    pw.write_text("\n")
    with pytest.raises(UplinkError, match=f"password file {pw} is empty"):
        credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))
    pw.unlink()
    with pytest.raises(UplinkError, match=f"cannot read password file {pw}"):
        credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki))


def test_tls_context_always_verifies(pki: Pki) -> None:
    cfg = uplink_config("mqtts://b.example:8883", ca_file=pki.ca)
    ctx = credentials(cfg, gateway_id=GATEWAY, identity=_identity(pki)).tls
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    system = credentials(uplink_config("wss://b.example:443"), gateway_id=GATEWAY,
                         identity=_identity(pki)).tls
    assert system is not None and system.verify_mode == ssl.CERT_REQUIRED
    assert credentials(uplink_config("mqtt://b.example:1883"), gateway_id=GATEWAY,
                       identity=_identity(pki)).tls is None


def test_bad_ca_file_is_named(tmp_path: Path, pki: Pki) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("nothing here")
    with pytest.raises(UplinkError, match=f"CA file {bad} holds no usable certificate"):
        credentials(uplink_config("mqtts://b.example:8883", ca_file=bad), gateway_id=GATEWAY,
                    identity=_identity(pki))


def test_connect_failures_read_as_one_line() -> None:
    assert connect_failure(ConnectionRefusedError(111, "Connection refused"), "h", 1, 5) == \
        "connection refused by h:1"
    assert connect_failure(TimeoutError("timed out"), "h", 1, 2.5) == \
        "no answer from h:1 within 2.5s"
    err = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                                          "failed: self-signed certificate (_ssl.c:1006)")
    err.verify_message = "self-signed certificate"
    assert connect_failure(err, "h", 1, 5) == \
        "TLS: certificate verify failed: self-signed certificate"


def test_rate_meter_counts_the_last_window_only() -> None:
    from gatewayd.uplink.pacing import RateMeter

    meter = RateMeter(10)
    assert meter.rate(100.0) == 0.0
    for second in range(100, 110):
        meter.add(50, second + 0.5)
    assert meter.rate(109.9) == 50.0
    assert meter.rate(114.0) == 25.0  # 105..109 are still in the window
    meter.add(10, 114.2)
    assert meter.rate(114.9) == 26.0
    assert meter.rate(200.0) == 0.0  # a long silence clears every bucket
