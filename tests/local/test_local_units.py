"""The pure parts of local ingress: ACL filters, tokens, signed messages, payloads,
the clients file and the [local] config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cbor2
import pytest

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.local import acl, payload, tokens
from gatewayd.local.clients import (
    ClientsFileError,
    load_clients,
    make_record,
    new_key,
    parse_clients,
    save_clients,
)
from gatewayd.local.config import parse_local
from gatewayd.local.errors import AuthRefused, MessageRefused

KEY = b"k" * 32
NOW = 1_700_000_000.0
POLICY = tokens.TokenPolicy(max_age=3600, clock_skew=30, audience="gw-1")


# ---- ACL ---------------------------------------------------------------------


@pytest.mark.parametrize(("topic", "flt", "ok"), [
    ("devices/a/t", "devices/a/+", True),
    ("devices/a", "devices/a/+", False),
    ("devices/a/t", "devices/#", True),
    ("devices", "devices/#", True),
    ("$SYS/x", "#", False),
    ("devices/b/t", "devices/a/#", False),
])
def test_topic_matching(topic: str, flt: str, ok: bool) -> None:
    assert acl.matches(topic, flt) is ok


@pytest.mark.parametrize(("allowed", "requested", "ok"), [
    ("gatewayd/telemetry/#", "gatewayd/telemetry/boiler/+", True),
    ("gatewayd/telemetry/+/temp", "gatewayd/telemetry/#", False),
    ("gatewayd/telemetry/+/temp", "gatewayd/telemetry/boiler/temp", True),
    ("gatewayd/telemetry/boiler/+", "gatewayd/telemetry/+/temp", False),
    ("#", "$SYS/#", False),
    ("a/b", "a/b", True),
])
def test_filter_cover(allowed: str, requested: str, ok: bool) -> None:
    assert acl.covers(allowed, requested) is ok


def test_reserved_and_invalid_topics_are_never_publishable() -> None:
    assert not acl.may_publish("gatewayd/telemetry/x/y", ("#",))
    assert not acl.may_publish("devices/+/x", ("#",))
    assert acl.filter_problem("a/#/b") == "'#' must be a whole level and the last one"
    assert acl.filter_problem("a/b+") == "'+' must be a whole level"
    assert acl.expand(("devices/{client}/#",), "t1") == ("devices/t1/#",)


# ---- password tokens -----------------------------------------------------------


def _verify(token: str, client: str = "t1", now: float = NOW) -> dict[str, object]:
    return tokens.verify_token(token, client=client, key=KEY, policy=POLICY, now=now)


def test_a_fresh_token_verifies() -> None:
    claims = _verify(tokens.mint_token("t1", KEY, ttl=600, now=NOW, audience="gw-1"))
    assert claims["sub"] == "t1" and claims["exp"] == NOW + 600


@pytest.mark.parametrize(("token", "reason"), [
    (tokens.mint_token("t1", KEY, ttl=60, now=NOW - 120), "expired"),
    (tokens.mint_token("t1", KEY, ttl=60, now=NOW + 120), "not_yet_valid"),
    (tokens.mint_token("t1", KEY, ttl=7200, now=NOW), "too_old"),
    (tokens.mint_token("t1", b"x" * 32, ttl=60, now=NOW), "bad_signature"),
    (tokens.mint_token("t2", KEY, ttl=60, now=NOW), "wrong_subject"),
    (tokens.mint_token("t1", KEY, ttl=60, now=NOW, audience="gw-2"), "wrong_audience"),
    ("not.a.jwt", "bad_token"),
    ("", "bad_token"),
])
def test_bad_tokens_are_refused_by_name(token: str, reason: str) -> None:
    with pytest.raises(AuthRefused) as err:
        _verify(token)
    assert err.value.reason == reason
    assert token not in str(err.value) or not token


def test_unsigned_alg_none_is_refused() -> None:
    import jwt

    none = jwt.encode({"sub": "t1", "iat": NOW, "exp": NOW + 60}, key=None, algorithm="none")
    with pytest.raises(AuthRefused) as err:
        _verify(none)
    assert err.value.reason == "bad_token"


# ---- signed messages -----------------------------------------------------------


def _check(data: str, topic: str = "devices/t1/x", now: float = NOW) -> tokens.SignedMessage:
    return tokens.verify_message(data.encode(), client="t1", key=KEY, topic=topic, lifespan=60,
                                 skew=2, now=now)


def test_signed_message_roundtrip_and_refusals() -> None:
    good = tokens.sign_message("devices/t1/x", "21.5", KEY, now=NOW)
    assert _check(good).payload == b"21.5"
    cases = {
        "forged": tokens.sign_message("devices/t1/x", "21.5", b"y" * 32, now=NOW),
        "wrong_topic": tokens.sign_message("devices/t1/z", "21.5", KEY, now=NOW),
        "stale": tokens.sign_message("devices/t1/x", "21.5", KEY, now=NOW - 63),
        "from_future": tokens.sign_message("devices/t1/x", "21.5", KEY, now=NOW + 3),
        "unsigned": "21.5",
    }
    for reason, data in cases.items():
        with pytest.raises(MessageRefused) as err:
            _check(data)
        assert err.value.reason == reason


def test_replay_cache_refuses_a_second_use_until_released_or_expired() -> None:
    cache = tokens.ReplayCache(lifespan=60, skew=2, limit=2)
    cache.claim("t1", "sig-a", NOW, NOW)
    with pytest.raises(MessageRefused) as err:
        cache.claim("t1", "sig-a", NOW, NOW + 1)
    assert err.value.reason == "replayed"
    cache.claim("t2", "sig-a", NOW, NOW)  # per client
    cache.release("t1", "sig-a")
    cache.claim("t1", "sig-a", NOW, NOW)
    cache.claim("t1", "sig-b", NOW, NOW)
    with pytest.raises(MessageRefused) as err:
        cache.claim("t1", "sig-c", NOW, NOW)
    assert err.value.reason == "replay_cache_full"
    cache.claim("t1", "sig-c", NOW + 100, NOW + 100)  # the old ones expired
    assert cache.size() == 2


# ---- payloads ------------------------------------------------------------------


def _decode(data: object, point: str | None = None, fmt: str = "json") -> list[tuple]:  # type: ignore[type-arg]
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return [(r.device, r.point, r.value, r.unit, r.time) for r in payload.decode(
        raw, client="t1", point=point, fmt=fmt, now_ns=5, max_records=3)]


def test_payload_shapes() -> None:
    assert _decode(21.5, "temp") == [("t1", "temp", 21.5, None, 5)]
    assert _decode(True, "on") == [("t1", "on", True, None, 5)]
    assert _decode({"v": 3, "u": "A", "t": 1_700_000_000.5}, "i") == [
        ("t1", "i", 3, "A", 1_700_000_000_500_000_000)]
    assert _decode({"temp": 20, "mode": "eco"}) == [("t1", "temp", 20, None, 5),
                                                     ("t1", "mode", "eco", None, 5)]
    assert _decode([{"bn": "urn:dev:mac:01:", "n": "a", "v": 1},
                    {"n": "b", "vs": "x", "t": -1}]) == [
        ("t1", "a", 1, None, 5), ("t1", "b", "x", None, 5 - 1_000_000_000)]
    cbor = cbor2.dumps([{-2: "d:", 0: "a", 2: 1.5}])
    assert _decode(cbor, fmt="cbor") == [("t1", "a", 1.5, None, 5)]


@pytest.mark.parametrize(("data", "point", "reason"), [
    (b"warm", "t", "malformed"),
    (None, "t", "malformed"),
    ([1, 2], "t", "malformed"),
    ({"x": 1}, "t", "malformed"),
    ([{"n": "a/b", "v": 1}], None, "malformed"),
    ([{"n": "a"}], None, "malformed"),
    ([], None, "malformed"),
    ({"a": [1]}, None, "malformed"),
    ([{"n": str(i), "v": i} for i in range(4)], None, "too_large"),
])
def test_bad_payloads_are_refused_by_name(data: object, point: str | None, reason: str) -> None:
    with pytest.raises(MessageRefused) as err:
        _decode(data, point)
    assert err.value.reason == reason


def test_topic_layout() -> None:
    assert payload.topic_point("devices/t1") == ("t1", None)
    assert payload.topic_point("devices/t1/temp") == ("t1", "temp")
    assert payload.topic_point("apps/x") is None
    for bad in ("devices", "devices/", "devices/t1/a/b", "devices/t1/bad name"):
        with pytest.raises(MessageRefused):
            payload.topic_point(bad)


# ---- clients file --------------------------------------------------------------


def test_clients_file_roundtrip_keeps_mode_and_hides_keys(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    rec = make_record("t1", key=new_key(), subscribe=("gatewayd/telemetry/{client}/#",),
                      signed=True)
    save_clients(path, {"t1": rec})
    assert (path.stat().st_mode & 0o777) == 0o640
    loaded = load_clients(path)
    assert loaded["t1"] == rec
    assert loaded["t1"].subscribe == ("gatewayd/telemetry/t1/#",)
    assert "key" not in repr(rec).lower().replace("publish", "")
    os.chmod(path, 0o644)
    with pytest.raises(ClientsFileError, match="unsafe permissions 0644"):
        load_clients(path)


def test_clients_file_problems_name_the_key() -> None:
    with pytest.raises(ClientsFileError) as err:
        parse_clients({"clients": {"a b": {}, "ok": {"key": "c2hvcnQ", "publish": ["a/#/b"],
                                                      "colour": 1}}}, file="c.toml")
    text = [str(p) for p in err.value.problems]
    assert text == [
        "c.toml: clients.a b: invalid client name 'a b'; expected up to 64 letters, digits, "
        "'_', '-' or '.'",
        "c.toml: clients.ok.colour: unknown key; expected one of key, publish, subscribe, "
        "signed, created",
        "c.toml: clients.ok.key: invalid key: a key of 5 bytes; expected at least 16",
        "c.toml: clients.ok.publish[0]: invalid filter 'a/#/b': '#' must be a whole level "
        "and the last one",
    ]
    assert "c2hvcnQ" not in " ".join(text)


# ---- config --------------------------------------------------------------------


def _local(data: dict[str, object]) -> tuple[object, list[str]]:
    problems = Problems(Origins("gw.toml"))
    cfg = parse_local(Section(data, "local", problems), config_dir=Path("/etc/gw"))
    return cfg, [str(p) for p in problems.items]


def test_local_config_defaults_are_loopback_and_off() -> None:
    cfg, problems = _local({})
    assert problems == [] and not cfg.enabled  # type: ignore[attr-defined]
    cfg, problems = _local({"mqtt": {}, "coap": {}})
    assert problems == []
    assert cfg.mqtt.listen == ("127.0.0.1:1883",)  # type: ignore[attr-defined]
    assert cfg.coap.listen == ("127.0.0.1:5683",)  # type: ignore[attr-defined]
    assert cfg.clients_file == Path("/etc/gw/clients.toml")  # type: ignore[attr-defined]


def test_local_config_errors_name_the_key() -> None:
    _cfg, problems = _local({"mqtt": {"listen": ["nowhere"], "tls_listen": ["127.0.0.1:8883"],
                                      "colour": 1}, "ack_delay": "soon"})
    assert problems == [
        "gw.toml: local.mqtt.listen: invalid address 'nowhere'; expected HOST:PORT such as "
        "127.0.0.1:9108",
        "gw.toml: local.mqtt.tls_cert_file: missing required key (tls_listen and wss_listen "
        "need tls_cert_file and tls_key_file)",
        "gw.toml: local.mqtt.colour: unknown key; expected one of enabled, listen, "
        "max_connections, publish_telemetry, telemetry_queue, tls_cert_file, tls_key_file, "
        "tls_listen, ws_listen, wss_listen",
        "gw.toml: local.ack_delay: invalid duration 'soon'; expected a number with a unit "
        "(ms, s, m, h, d), such as '500ms', '5s' or '1m30s'",
    ]
