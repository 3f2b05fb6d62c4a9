"""Config: TOML + drop-ins, validated into frozen dataclasses; every problem named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gatewayd.config import load_config
from gatewayd.config.units import parse_duration, parse_size
from gatewayd.errors import ConfigError
from tests.support.daemon import gatewayctl

GOOD = """
[gateway]
id = "gw-0001"
state_dir = "{root}/state"
runtime_dir = "{root}/run"

[devices.demo]
driver = "sim"
poll = "500ms"
points = [
  {{ name = "temp",  signal = "sine", min = 18.0, max = 24.0, period = "60s", unit = "Cel" }},
  {{ name = "count", signal = "counter" }},
]

[buffer]
max_size = "64MiB"
commit_interval = "200ms"

[uplinks.cloud]
url = "mqtts://broker.example.net:8883"
topic_prefix = "gateways/gw-0001"
auth = {{ type = "mtls" }}
select = ["demo/*"]
"""


def write(root: Path, text: str, dropins: dict[str, str] | None = None) -> Path:
    main = root / "gatewayd.toml"
    main.write_text(text.format(root=root))
    if dropins:
        (root / "conf.d").mkdir()
        for name, body in dropins.items():
            (root / "conf.d" / name).write_text(body)
    return main


def problems(main: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(main, env={})
    return [str(p) for p in info.value.problems]


def test_good_config_is_frozen_and_typed(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={})
    assert cfg.gateway.id == "gw-0001"
    assert cfg.buffer.max_size == 64 * 1024 * 1024
    assert cfg.buffer.commit_interval == 0.2
    assert cfg.buffer.path == tmp_path / "state" / "buffer.sqlite"
    assert cfg.control.socket == tmp_path / "run" / "control.sock"
    demo = cfg.devices["demo"]
    assert demo.driver == "sim" and demo.options.poll == 0.5
    assert [p.name for p in demo.options.points] == ["temp", "count"]
    up = cfg.uplinks["cloud"]
    assert (up.scheme, up.host, up.port, up.auth.type) == ("mqtts", "broker.example.net",
                                                           8883, "mtls")
    assert up.select == ("demo/*",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.buffer.max_size = 1  # type: ignore[misc]


def test_directories_default_to_systemd_environment(tmp_path: Path) -> None:
    main = tmp_path / "g.toml"
    main.write_text('[gateway]\nid = "gw"\n')
    cfg = load_config(main, env={"STATE_DIRECTORY": "/var/lib/x", "RUNTIME_DIRECTORY": "/run/x"})
    assert cfg.buffer.path == Path("/var/lib/x/buffer.sqlite")
    assert cfg.control.socket == Path("/run/x/control.sock")
    cfg = load_config(main, env={})
    assert cfg.gateway.state_dir == Path("/var/lib/gatewayd")
    assert cfg.gateway.runtime_dir == Path("/run/gatewayd")


def test_type_error_names_file_key_and_expectation(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('max_size = "64MiB"', "max_size = 64"))
    assert problems(main) == [
        f"{main}: buffer.max_size: expected a size string such as '256MiB', got 64"]


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('poll = "500ms"', 'pol = "500ms"'))
    assert problems(main) == [
        f"{main}: devices.demo.pol: unknown key (did you mean 'poll'?); "
        "expected one of driver, enabled, fail_after, limit, points, poll, priority, wedge_after"]


def test_bad_duration(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('commit_interval = "200ms"', 'commit_interval = "200"'))
    assert problems(main) == [
        f"{main}: buffer.commit_interval: invalid duration '200'; expected a number with a unit "
        "(ms, s, m, h, d), such as '500ms', '5s' or '1m30s'"]


def test_missing_required_key(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('id = "gw-0001"', ""))
    assert problems(main) == [f"{main}: gateway.id: missing required key"]


def test_unknown_value_lists_choices(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('signal = "counter"', 'signal = "countr"'))
    assert problems(main) == [
        f"{main}: devices.demo.points[1].signal: unknown value 'countr' (did you mean "
        "'counter'?); expected one of counter, sine, step, random_walk, constant"]


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    text = (GOOD.replace('max_size = "64MiB"', 'max_size = "64 parsecs"')
            .replace('driver = "sim"', 'driver = "sim"\npriority = "high"')
            .replace('type = "mtls"', 'type = "kerberos"'))
    main = write(tmp_path, text)
    found = problems(main)
    assert len(found) == 3
    assert found[0].startswith(f"{main}: buffer.max_size: invalid size '64 parsecs'")
    assert found[1] == f"{main}: devices.demo.priority: expected an integer, got a string"
    assert found[2].startswith(f"{main}: uplinks.cloud.auth.type: unknown value 'kerberos'")


def test_dropins_merge_in_name_order_and_name_their_file(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD, {
        "20-later.toml": '[buffer]\ncommit_interval = "1s"\n',
        "10-first.toml": '[buffer]\ncommit_interval = "50ms"\nmax_size = "32MiB"\n',
        "README": "not toml, ignored",
    })
    cfg = load_config(main, env={})
    assert cfg.buffer.commit_interval == 1.0
    assert cfg.buffer.max_size == 32 * 1024 * 1024
    assert cfg.files == (str(main), str(tmp_path / "conf.d" / "10-first.toml"),
                         str(tmp_path / "conf.d" / "20-later.toml"))


def test_bad_dropin_is_named(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD, {"50-boiler.toml": '[devices.boiler]\ndriver = "sim"\n'
                                                    'poll = "fast"\npoints = []\n'})
    bad = tmp_path / "conf.d" / "50-boiler.toml"
    assert problems(main) == [
        f"{bad}: devices.boiler.poll: invalid duration 'fast'; expected a number with a unit "
        "(ms, s, m, h, d), such as '500ms', '5s' or '1m30s'"]


def test_invalid_toml_in_dropin(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD, {"99-broken.toml": "[buffer\n"})
    found = problems(main)
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'conf.d' / '99-broken.toml'}: invalid TOML: ")


def test_unknown_driver_lists_installed_ones(tmp_path: Path) -> None:
    main = write(tmp_path, GOOD.replace('driver = "sim"', 'driver = "simm"'))
    [problem] = problems(main)
    assert problem.startswith(f"{main}: devices.demo.driver: unknown driver 'simm'; "
                              "expected one of ")
    assert "sim" in problem.rsplit("expected one of ", 1)[1].split(", ")


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: file not found"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("5s", 5.0), ("1m30s", 90.0), ("2h", 7200.0), ("1d", 86400.0),
    ("0.25s", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "5 s", "s", "-1s", "1x", "", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("256MiB", 256 * 2**20), ("1GiB", 2**30), ("10MB", 10_000_000), ("4096B", 4096),
    ("512KiB", 512 * 1024)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_check_config_cli_exit_codes_and_output(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    ok = gatewayctl("check-config", "--config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("configuration is valid: 1 devices, 1 uplinks")

    good.write_text(GOOD.format(root=tmp_path).replace('"500ms"', '"fast"')
                    .replace('id = "gw-0001"', ""))
    bad = gatewayctl("check-config", "--config", str(good))
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert lines == [
        f"{good}: gateway.id: missing required key",
        f"{good}: devices.demo.poll: invalid duration 'fast'; expected a number with a unit "
        "(ms, s, m, h, d), such as '500ms', '5s' or '1m30s'",
        "2 problem(s); configuration is invalid",
    ]
    as_json = gatewayctl("check-config", "--config", str(good), "--json")
    assert as_json.returncode == 2
    data = json.loads(as_json.stdout)
    assert data["valid"] is False
    assert [p["path"] for p in data["problems"]] == ["gateway.id", "devices.demo.poll"]
