"""The [tunnel] table: defaults, and a named problem for each bad value."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import load_config
from gatewayd.errors import ConfigError
from gatewayd.tunnel.config import Forward, HostKey, parse_host_key
from tests.tunnel.tunnel_support import config_problems, tunnel_config

# A real ed25519 public key blob (from ssh-keygen) and a matching ECDSA one.
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIKYati1UVDB7Q8heb8JQjGxOvsoM0/QbrliN1r1+VZ/6"
ECDSA = base64.b64encode(b"\x00\x00\x00\x13ecdsa-sha2-nistp256" + b"\x00" * 8).decode()

MINIMAL: dict[str, Any] = {
    "host": "bastion.example.net",
    "user": "gw-0001",
    "host_key": f"[bastion.example.net]:22 ssh-ed25519 {ED25519}",
    "forwards": [{"remote": "127.0.0.1:22001", "local": "127.0.0.1:22"}],
}


def with_(**changes: Any) -> dict[str, Any]:
    table = dict(MINIMAL)
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def test_defaults() -> None:
    c = tunnel_config(MINIMAL, default_key_file=Path("/var/lib/gatewayd/identity/ssh_ed25519"))
    assert (c.host, c.port, c.user) == ("bastion.example.net", 22, "gw-0001")
    assert c.host_keys == (HostKey("ssh-ed25519", ED25519),)
    assert c.key_file == Path("/var/lib/gatewayd/identity/ssh_ed25519")
    assert c.forwards == (Forward("127.0.0.1", 22001, "127.0.0.1", 22),)
    assert (c.mode, c.transport, c.url, c.ca_file) == ("on-demand", "tcp", None, None)
    assert c.ssh == "/usr/bin/ssh"
    assert (c.server_alive_interval, c.server_alive_count_max, c.connect_timeout) == (15, 3, 15)
    assert (c.backoff_initial, c.backoff_max) == (1.0, 60.0)
    assert (c.default_ttl, c.max_ttl) == (3600.0, 8 * 3600.0)
    assert c.bastion == "gw-0001@bastion.example.net:22"
    assert str(c.forwards[0]) == "127.0.0.1:22001 -> 127.0.0.1:22"


def test_every_key_set() -> None:
    c = tunnel_config(with_(
        port=2222, key_file="/etc/gatewayd/tunnel_key", mode="always", transport="websocket",
        url="wss://relay.example.net/ssh", ca_file="/etc/gatewayd/relay-ca.pem",
        ssh="/opt/ssh/bin/ssh", server_alive_interval="30s", server_alive_count_max=5,
        connect_timeout="20s", backoff_initial="2s", backoff_max="5m", default_ttl="30m",
        max_ttl="2h",
        host_key=[f"ssh-ed25519 {ED25519} bastion", f"ecdsa-sha2-nistp256 {ECDSA}"],
        forwards=[{"remote": "127.0.0.1:22001", "local": "127.0.0.1:22"},
                  {"remote": "[::1]:8443", "local": "192.168.1.10:443"}]))
    assert c.port == 2222 and c.key_file == Path("/etc/gatewayd/tunnel_key")
    assert (c.mode, c.transport) == ("always", "websocket")
    assert c.url == "wss://relay.example.net/ssh"
    assert c.ca_file == Path("/etc/gatewayd/relay-ca.pem")
    assert c.host_keys == (HostKey("ssh-ed25519", ED25519), HostKey("ecdsa-sha2-nistp256", ECDSA))
    assert c.forwards[1] == Forward("::1", 8443, "192.168.1.10", 443)
    assert str(c.forwards[1]) == "[::1]:8443 -> 192.168.1.10:443"
    assert (c.server_alive_interval, c.server_alive_count_max, c.connect_timeout) == (30, 5, 20)
    assert (c.backoff_initial, c.backoff_max, c.default_ttl, c.max_ttl) == (2, 300, 1800, 7200)
    assert c.bastion == "gw-0001@wss://relay.example.net/ssh"


def test_websocket_host_defaults_to_the_url_host() -> None:
    c = tunnel_config(with_(host=None, transport="websocket", url="wss://relay.example.net:8443/"))
    assert c.host == "relay.example.net"


def test_the_url_query_is_never_shown() -> None:
    c = tunnel_config(with_(transport="websocket", url="wss://relay.example.net/ssh?t=s3cret"))
    assert c.bastion == "gw-0001@wss://relay.example.net/ssh"


def test_several_host_keys_in_one_string_and_comments() -> None:
    c = tunnel_config(with_(host_key=f"# bastion\nssh-ed25519 {ED25519}\n"
                                     f"bastion ecdsa-sha2-nistp256 {ECDSA} comment\n"))
    assert [k.type for k in c.host_keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]


@pytest.mark.parametrize(("changes", "problem"), [
    ({"host": None}, "test.toml: tunnel.host: missing required key"),
    ({"user": None}, "test.toml: tunnel.user: missing required key"),
    ({"host_key": None}, "test.toml: tunnel.host_key: missing required key"),
    ({"forwards": None}, "test.toml: tunnel.forwards: missing required array of tables"),
    ({"forwards": []}, "test.toml: tunnel.forwards: expected at least one forward"),
    ({"host": "-oProxyCommand=x"}, "tunnel.host: invalid host '-oProxyCommand=x'"),
    ({"user": "root@x"}, "tunnel.user: invalid user 'root@x'"),
    ({"port": 0}, "tunnel.port: expected an integer >= 1, got 0"),
    ({"mode": "sometimes"}, "tunnel.mode: unknown value 'sometimes'; expected one of always, "
                            "on-demand"),
    ({"transport": "udp"}, "tunnel.transport: unknown value 'udp'"),
    ({"host_key": "ssh-ed25519"}, "tunnel.host_key: invalid host key 'ssh-ed25519'"),
    ({"host_key": f"ssh-ed25519 {ED25519[:-3]}!!!"}, "tunnel.host_key: invalid ssh-ed25519 "
                                                     "host key data"),
    ({"host_key": f"ecdsa-sha2-nistp256 {ED25519}"},
     "tunnel.host_key: host key data is a 'ssh-ed25519' key but the line says "
     "'ecdsa-sha2-nistp256'"),
    ({"host_key": f"@cert-authority * ssh-ed25519 {ED25519}"},
     "tunnel.host_key: known_hosts markers such as '@cert-authority' are not supported"),
    ({"host_key": f"ssh-dss {ED25519}"}, "tunnel.host_key: invalid host key"),
    ({"host_key": []}, "tunnel.host_key: expected at least one host key"),
    ({"host_key": 7}, "tunnel.host_key: expected a known_hosts line or an array of them"),
    ({"forwards": [{"remote": "127.0.0.1:22001"}]},
     "tunnel.forwards[0].local: missing required key"),
    ({"forwards": [{"remote": "127.0.0.1", "local": "127.0.0.1:22"}]},
     "tunnel.forwards[0].remote: invalid address '127.0.0.1'; expected HOST:PORT"),
    ({"forwards": [{"remote": "127.0.0.1:1", "local": "127.0.0.1:22", "via": "x"}]},
     "tunnel.forwards[0].via: unknown key"),
    ({"forwards": [{"remote": "127.0.0.1:1", "local": "127.0.0.1:22"},
                   {"remote": "127.0.0.1:1", "local": "127.0.0.1:80"}]},
     "tunnel.forwards[1].remote: 127.0.0.1:1 is already forwarded by an earlier entry"),
    ({"transport": "websocket"}, "tunnel.url: missing required key (transport = \"websocket\" "
                                 "needs a wss:// URL)"),
    ({"transport": "websocket", "url": "https://relay/"},
     "tunnel.url: unknown scheme 'https' in 'https://relay/'; expected wss:// or ws://"),
    ({"transport": "websocket", "url": "wss://user:secret@relay/"},
     "tunnel.url: credentials in the URL are not allowed"),
    ({"url": "wss://relay/"}, "tunnel.url: only used with transport = \"websocket\""),
    ({"ca_file": "/etc/ca.pem"}, "tunnel.ca_file: only used with transport = \"websocket\""),
    ({"key_file": "/tmp/a\"b"}, "tunnel.key_file: invalid path"),
    ({"default_ttl": "9h"}, "tunnel.default_ttl: expected a duration of at most max_ttl"),
    ({"backoff_initial": "2m"}, "tunnel.backoff_max: expected a duration of at least "
                                "backoff_initial"),
    ({"server_alive_interval": "0s"}, "tunnel.server_alive_interval: expected a duration of "
                                      "at least 1s"),
    ({"hosts": "x"}, "tunnel.hosts: unknown key (did you mean 'host'?)"),
])
def test_problems_are_named(changes: dict[str, Any], problem: str) -> None:
    problems = config_problems(with_(**changes))
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_parse_host_key_accepts_known_hosts_and_pub_forms() -> None:
    expected = HostKey("ssh-ed25519", ED25519)
    assert parse_host_key(f"ssh-ed25519 {ED25519}") == expected
    assert parse_host_key(f"ssh-ed25519 {ED25519} root@bastion") == expected
    assert parse_host_key(f"[b.example.net]:2222,10.0.0.1 ssh-ed25519 {ED25519}") == expected
    assert parse_host_key(f"|1|salt=|hash= ssh-ed25519 {ED25519}") == expected


def test_through_load_config(tmp_path: Path) -> None:
    main = tmp_path / "gatewayd.toml"
    state = tmp_path / "state"
    main.write_text(f"""
[gateway]
id = "gw-test"
state_dir = "{state}"
""")
    assert load_config(main).tunnel is None  # no [tunnel] table: no tunnel
    dropin = tmp_path / "conf.d" / "50-tunnel.toml"
    dropin.parent.mkdir()
    dropin.write_text(f"""
[tunnel]
host = "bastion.example.net"
user = "gw-test"
host_key = "ssh-ed25519 {ED25519}"
forwards = [{{ remote = "127.0.0.1:22001", local = "127.0.0.1:22" }}]
""")
    config = load_config(main)
    assert config.tunnel is not None
    assert config.tunnel.key_file == state / "identity" / "ssh_ed25519"  # identity init's key

    dropin.write_text(dropin.read_text() + 'mode = "alway"\n')
    with pytest.raises(ConfigError) as err:
        load_config(main)
    assert [str(p) for p in err.value.problems] == [
        f"{dropin}: tunnel.mode: unknown value 'alway' (did you mean 'always'?); "
        "expected one of always, on-demand"]

    dropin.write_text(dropin.read_text().replace('mode = "alway"', "enabled = false"))
    assert load_config(main).tunnel is None
