"""Property tests of what local clients send: password tokens, signed messages,
payloads, topics and the clients file. Garbage gets the named refusal
(AuthRefused, MessageRefused, ClientsFileError), never another exception, and
what is accepted satisfies every rule.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.local import acl, payload, tokens
from gatewayd.local.clients import encode_key, parse_clients
from gatewayd.local.errors import AuthRefused, ClientsFileError, MessageRefused
from gatewayd.local.payload import POINT_NAME
from tests.support.properties import examples

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = 1_700_000_000.0
POLICY = tokens.TokenPolicy(max_age=3600, clock_skew=30, audience="gw-1")
LIFESPAN, SKEW = 60.0, 30.0
TOPIC = "devices/t1"

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
# Times around the rules' edges, and values JSON can carry but clocks cannot (pyjwt's
# decoder reads NaN and Infinity too).
times = st.one_of(st.floats(NOW - 8000, NOW + 8000), st.sampled_from(
    [NOW, NOW - 3600, NOW + 31, 0, -1, 1e300, math.nan, math.inf, -math.inf]), json_values)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(signing_input: str, key: bytes) -> str:
    """``signing_input`` with its HS256 signature: claims JSON may hold NaN and Infinity
    (what a client could send, and pyjwt's decoder reads)."""
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


jws_texts = st.one_of(
    st.text(max_size=60),
    st.builds(lambda h, p, s: f"{b64(json.dumps(h).encode())}.{b64(json.dumps(p).encode())}.{s}",
              json_values, json_values, st.text(max_size=20)),
    st.builds(lambda p: _sign(f"{b64(b'{}')}.{b64(json.dumps(p).encode())}", KEY), json_values),
)


# ---- password tokens -----------------------------------------------------------------

@pytest.mark.property
@settings(max_examples=examples(300))
@given(jws_texts)
def test_any_password_is_refused_by_name(password: str) -> None:
    try:
        tokens.verify_token(password, client="t1", key=KEY, policy=POLICY, now=NOW)
    except AuthRefused as err:
        assert err.reason in ("bad_signature", "bad_token", "expired", "not_yet_valid",
                              "too_old", "wrong_subject", "wrong_audience")
        assert password not in str(err) or len(password) < 8


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.fixed_dictionaries({}, optional={
    "iat": times, "exp": times,
    "sub": st.one_of(st.just("t1"), st.just("t2"), json_values),
    "aud": st.one_of(st.just("gw-1"), st.just(["gw-1", "x"]), json_values)}),
    st.sampled_from([KEY, OTHER_KEY]))
def test_a_signed_password_token_is_accepted_only_within_the_policy(
        claims: dict[str, Any], key: bytes) -> None:
    token = _sign(f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
                  f"{b64(json.dumps(claims).encode())}", key)
    try:
        got = tokens.verify_token(token, client="t1", key=KEY, policy=POLICY, now=NOW)
    except AuthRefused:
        return
    assert key == KEY
    iat, exp = got["iat"], got["exp"]
    assert math.isfinite(iat) and math.isfinite(exp)
    assert exp > NOW - POLICY.clock_skew and iat <= NOW + POLICY.clock_skew
    assert NOW - iat <= POLICY.max_age + POLICY.clock_skew
    assert exp - iat <= POLICY.max_age + POLICY.clock_skew
    assert got.get("sub") in (None, "t1")


# ---- signed messages -----------------------------------------------------------------

@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.one_of(st.binary(max_size=120), jws_texts.map(str.encode)))
def test_any_message_body_is_refused_by_name(data: bytes) -> None:
    try:
        tokens.verify_message(data, client="t1", key=KEY, topic=TOPIC, lifespan=LIFESPAN,
                              skew=SKEW, now=NOW)
    except MessageRefused as err:
        assert err.reason in ("unsigned", "forged", "malformed", "wrong_topic", "stale",
                              "from_future")


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.fixed_dictionaries({}, optional={
    "topic": st.one_of(st.just(TOPIC), st.just("devices/t2"), json_values),
    "iat": times, "payload": st.one_of(st.just("21.5"), json_values)}))
def test_a_signed_message_is_accepted_only_fresh_and_for_its_topic(
        claims: dict[str, Any]) -> None:
    data = _sign(f"{b64(json.dumps({'alg': 'HS256'}).encode())}."
                 f"{b64(json.dumps(claims).encode())}", KEY).encode()
    try:
        msg = tokens.verify_message(data, client="t1", key=KEY, topic=TOPIC,
                                    lifespan=LIFESPAN, skew=SKEW, now=NOW)
    except MessageRefused:
        return
    assert claims["topic"] == TOPIC and isinstance(claims["payload"], str)
    assert math.isfinite(msg.iat)
    assert NOW - LIFESPAN - SKEW <= msg.iat <= NOW + SKEW
    # the replay cache can hold it, and refuses it the second time
    cache = tokens.ReplayCache(lifespan=LIFESPAN, skew=SKEW)
    cache.claim("t1", msg.signature, msg.iat, NOW)
    with pytest.raises(MessageRefused):
        cache.claim("t1", msg.signature, msg.iat, NOW + 1)


# ---- payloads and topics ---------------------------------------------------------------

senml_records = st.dictionaries(
    st.sampled_from(["bn", "n", "v", "vs", "vb", "vd", "u", "t", "bt", "bu", "bv", "s", "ut",
                     "x"]),
    st.one_of(json_scalars, st.sampled_from(["a", "urn:dev:x:", "a/b", "", "t/"])), max_size=5)
json_bodies = st.one_of(
    json_values,
    st.lists(senml_records, max_size=5),
    st.dictionaries(st.sampled_from(["temp", "on", "bad name", "a.b", "", "x" * 130]),
                    json_scalars, max_size=4),
    senml_records,
).map(lambda v: json.dumps(v).encode())
nested = st.integers(1, 30_000).map(lambda n: b"[" * n + b"]" * n)
cbor_bodies = st.one_of(
    st.lists(st.dictionaries(st.one_of(st.integers(-10, 10), st.sampled_from(["n", "v"])),
                             json_scalars, max_size=4), max_size=4),
    json_values,
).map(cbor2.dumps)


@pytest.mark.property
@settings(max_examples=examples(400))
@given(st.one_of(json_bodies, cbor_bodies, st.binary(max_size=80), nested,
                 st.sampled_from([b"1e999", b"-1e999", b"NaN", b'{"a": Infinity}',
                                  b"1" * 5000])),
       st.sampled_from([None, "temp", "x"]), st.sampled_from(["json", "cbor"]))
def test_any_payload_gives_readings_or_a_named_refusal(data: bytes, point: str | None,
                                                       fmt: str) -> None:
    try:
        readings = payload.decode(data, client="t1", point=point, fmt=fmt, now_ns=5,
                                  max_records=10)
    except MessageRefused as err:
        assert err.reason in ("malformed", "too_large"), err.reason
        return
    assert 0 < len(readings) <= 10
    for r in readings:
        assert r.device == "t1" and POINT_NAME.fullmatch(r.point)
        assert isinstance(r.value, (bool, int, float, str, bytes))
        if isinstance(r.value, float):
            assert math.isfinite(r.value)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.text(alphabet="devics/t12+#$ab", max_size=20),
       st.lists(st.text(alphabet="devics/t12+#$ab{}", max_size=14), max_size=3))
def test_topics_and_filters_never_raise_anything_but_the_named_refusal(
        topic: str, filters: list[str]) -> None:
    try:
        payload.topic_point(topic)
    except MessageRefused as err:
        assert err.reason == "malformed"
    for f in filters:
        acl.filter_problem(f)
    acl.may_publish(topic, acl.expand(filters, "t1"))
    acl.may_subscribe(topic, filters)


@pytest.mark.property
@settings(max_examples=examples(300))
@given(st.dictionaries(st.sampled_from(["clients", "x"]), st.one_of(
    st.dictionaries(st.sampled_from(["t1", "bad name", "", "a" * 80, "t-2"]), st.one_of(
        st.fixed_dictionaries({"key": st.sampled_from([encode_key(KEY), "!!", "", "AAAA"])},
                              optional={"publish": st.one_of(st.lists(st.sampled_from(
                                  ["devices/{client}/#", "#", "a/+/b", "a/#/b", "+x"])),
                                  json_values),
                                  "signed": json_values, "created": json_values,
                                  "other": json_values}),
        json_values), max_size=3),
    json_values), max_size=2))
def test_any_clients_file_content_gives_clients_or_a_clients_file_error(
        data: dict[str, Any]) -> None:
    try:
        clients = parse_clients(data, file="clients.toml")
    except ClientsFileError as err:
        assert err.problems and all(p.file == "clients.toml" for p in err.problems)
        assert encode_key(KEY) not in str(err)
        return
    for name, rec in clients.items():
        assert rec.key == KEY and name in data["clients"]
