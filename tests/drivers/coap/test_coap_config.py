"""The coap driver's options: defaults, grouping by path, and every problem named."""

from __future__ import annotations

import re
from typing import Any

import pytest
from gatewayd.drivers.coap.config import (
    Endpoint,
    Writable,
    max_retransmit,
    parse_endpoint,
)

from gatewayd.commands.errors import CommandRefused
from gatewayd.commands.policy import WriteLimits, write_limits
from gatewayd.config import load_config
from gatewayd.errors import ConfigError

from .conftest import parse


def problems(table: dict[str, Any]) -> list[str]:
    return [f"{p.path}: {p.message}" for p in parse(table)[1]]


BASE: dict[str, Any] = {"url": "coap://192.0.2.7", "resources": [
    {"path": "/temp", "name": "temp"}]}


def test_defaults() -> None:
    opts, found = parse(BASE)
    assert found == []
    assert opts.endpoint == Endpoint("192.0.2.7", 5683)
    assert (opts.poll, opts.timeout, opts.ack_timeout) == (10.0, 10.0, 2.0)
    assert (opts.retry_delay, opts.retry_delay_max) == (1.0, 60.0)
    assert (opts.observe_grace, opts.observe_refresh) == (5.0, None)
    assert opts.max_retransmit == 1  # 2 s x (1 + 2) x 1.5 = 9 s fits in 10 s; 21 s does not
    (point,) = opts.points
    assert (point.mode, point.poll, point.format, point.type) == ("poll", 10.0, "text", "number")
    assert (point.field, point.unit, point.scale, point.offset) == (None, None, 1.0, 0.0)
    assert point.writable is None
    assert opts.endpoint.uri("/temp?x=1") == "coap://192.0.2.7:5683/temp?x=1"


def test_points_on_one_path_share_one_resource() -> None:
    opts, found = parse({"url": "coap://[fe80::1]:5700/", "poll": "2s", "resources": [
        {"path": "/env", "name": "t", "format": "json", "field": "temp", "unit": "Cel"},
        {"path": "/time?ticks", "name": "ticks", "mode": "observe"},
        {"path": "/env", "name": "h", "format": "json", "field": "hum"},
        {"path": "/fast", "name": "f", "poll": "250ms"},
    ]})
    assert found == []
    assert opts.url == "coap://[fe80::1]:5700"
    assert [(r.path, r.mode, r.poll, [p.name for p in r.points]) for r in opts.resources] == [
        ("/env", "poll", 2.0, ["t", "h"]), ("/time?ticks", "observe", None, ["ticks"]),
        ("/fast", "poll", 0.25, ["f"])]
    assert opts.point("h") is not None and opts.point("nope") is None


@pytest.mark.parametrize(("timeout", "ack", "expected"), [
    (10.0, 2.0, 1), (3.0, 2.0, 0), (9.0, 2.0, 1), (93.0, 2.0, 4), (1000.0, 2.0, 4),
    (1.0, 0.3, 0), (1.0, 0.2, 1), (2.1, 0.2, 2),
])
def test_retransmissions_fit_the_timeout(timeout: float, ack: float, expected: int) -> None:
    n = max_retransmit(timeout, ack)
    assert n == expected
    assert ack * (2 ** (n + 1) - 1) * 1.5 <= timeout + 1e-9


def test_writable_points() -> None:
    opts, found = parse({"url": "coap://h", "resources": [
        {"path": "/sp", "name": "sp", "writable": {"min": 5, "max": 30}},
        {"path": "/mode", "name": "mode", "format": "json", "type": "string", "writable": True},
        {"path": "/s", "name": "s", "format": "senml", "field": "on", "type": "bool",
         "writable": True},
        {"path": "/ro", "name": "ro", "writable": False},
    ]})
    assert found == []
    assert [p.writable for p in opts.points] == [Writable(5, 30), Writable(), Writable(), None]


@pytest.mark.parametrize(("url", "message"), [
    ("coaps://h", "coaps:// (DTLS) is not supported"),
    ("http://h", "unknown scheme in 'http://h'; expected coap://HOST[:PORT]"),
    ("coap://h/x", "unexpected path or query in 'coap://h/x'"),
    ("coap://h?a=1", "unexpected path or query"),
    ("coap://:5683", "missing host"),
    ("coap://h:0", "invalid port 0"),
    ("coap://h:99999", "invalid port"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_endpoint(url)
    assert any(message in p for p in problems({**BASE, "url": url}))


def test_every_problem_is_named_with_its_key_path() -> None:
    found = problems({
        "url": "coap://h", "timeout": "1s", "ack_timeout": "2s", "retry_delay": "5s",
        "retry_delay_max": "1s", "colour": "red",
        "resources": [
            {"path": "temp", "name": "a/b"},
            {"path": "/x", "name": "x", "mode": "observe", "poll": "1s"},
            {"path": "/x", "name": "x2", "format": "jsn"},
            {"path": "/t", "name": "t", "field": "v"},
            {"path": "/b", "name": "b", "format": "json", "type": "bool", "scale": 2},
            {"path": "/n", "name": "n", "writable": True},
            {"path": "/s", "name": "s", "format": "senml", "writable": {"min": 0, "max": 1}},
            {"path": "/str", "name": "str", "format": "json", "type": "string",
             "writable": {"min": 0, "max": 1}},
            {"path": "/r", "name": "r", "writable": {"min": 5, "max": 1}},
            {"path": "/r2", "name": "r", "scale": 0, "unknown": 1},
        ]})
    expected = [
        "devices.dev.timeout: expected at least 1.5 x ack_timeout (2s)",
        "devices.dev.retry_delay_max: expected at least retry_delay (5s), got 1s",
        "devices.dev.resources[0].path: invalid path 'temp'",
        "devices.dev.resources[0].name: invalid point name 'a/b'",
        "devices.dev.resources[1].poll: poll applies to mode = \"poll\" only",
        "devices.dev.resources[2].format: unknown value 'jsn' (did you mean 'json'?)",
        "devices.dev.resources[3].field: field applies to json, cbor, senml and senml-cbor",
        "devices.dev.resources[4].scale: scale applies to numbers only, not type = 'bool'",
        "devices.dev.resources[5].writable: expected a table { min = ..., max = ... }",
        "devices.dev.resources[6].writable: a writable SenML point needs field",
        "devices.dev.resources[7].writable.min: unknown key",
        "devices.dev.resources[7].writable.max: unknown key",
        "devices.dev.resources[8].writable: expected finite min <= max, got min = 5, max = 1",
        "devices.dev.resources[9].scale: expected a finite non-zero number, got 0.0",
        "devices.dev.resources[9].unknown: unknown key",
        "devices.dev.resources[9].name: duplicate point name 'r'",
        "devices.dev.colour: unknown key",
    ]
    for e in expected:
        assert sum(p.startswith(e) for p in found) == 1, (e, found)
    # /x: the second point is polled, the first observed
    assert [p for p in found if "differs from point 'x'" in p] == [
        "devices.dev.resources[2].mode: differs from point 'x' on the same path '/x'; one "
        "request serves a path, so its points share mode, poll and format"]
    assert len(found) == len(expected) + 1


def test_shared_paths_are_not_writable() -> None:
    found = problems({"url": "coap://h", "resources": [
        {"path": "/env", "name": "t", "format": "json", "field": "t",
         "writable": {"min": 0, "max": 1}},
        {"path": "/env", "name": "h", "format": "json", "field": "h"}]})
    assert found == ["devices.dev.resources[0].writable: path '/env' holds several points: a "
                     "PUT replaces the whole representation, so none of them is writable"]


def test_missing_keys() -> None:
    assert problems({}) == ["devices.dev.url: missing required key",
                            "devices.dev.resources: missing required array of tables"]
    assert problems({"url": "coap://h", "resources": []}) == [
        "devices.dev.resources: expected at least one resource"]
    assert problems({"url": "coap://h", "resources": [{}]}) == [
        "devices.dev.resources[0].path: missing required key",
        "devices.dev.resources[0].name: missing required key"]


def test_a_config_file_names_the_file(tmp_path: Any) -> None:
    path = tmp_path / "gatewayd.toml"
    path.write_text('[gateway]\nid = "gw"\n[devices.boiler]\ndriver = "coap"\n'
                    'url = "coap://127.0.0.1"\n'
                    'resources = [{ path = "/t", name = "t", mode = "obsrve" }]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(
        f"{path}: devices.boiler.resources[0].mode: unknown value 'obsrve' (did you mean "
        "'observe'?)")


def test_commands_see_the_writable_limits() -> None:
    opts, _ = parse({"url": "coap://h", "resources": [
        {"path": "/sp", "name": "sp", "writable": {"min": 5, "max": 30}},
        {"path": "/ro", "name": "ro"}]})
    assert write_limits(opts, "dev", "sp") == WriteLimits(5.0, 30.0)
    with pytest.raises(CommandRefused, match="dev/ro is not declared writable"):
        write_limits(opts, "dev", "ro")
