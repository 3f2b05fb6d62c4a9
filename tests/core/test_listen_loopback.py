"""Design guarantee 4, outbound only: with the defaults, everything the daemon listens on
(local MQTT broker, CoAP server) is bound to loopback, read from the kernel's own tables."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, gatewayctl

CONFIG = """
[gateway]
id = "gw-listen"

[devices.demo]
driver = "sim"
poll = "1s"
points = [{ name = "n", signal = "counter" }]

[local.mqtt]
[local.coap]
"""

TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"


def _address(hex_addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # /proc/net prints each 32-bit word of the address in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words), int(port, 16)


def bound_sockets(pid: int) -> list[
        tuple[str, str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(protocol, state, address, port) of every inet socket the process holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                address, port = _address(fields[1])
                out.append((proto, fields[3], address, port))
    return out


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """127/8 or ::1, also as an IPv4-mapped IPv6 address (aiocoap binds ::ffff:127.0.0.1)."""
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _port_free(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_with_the_defaults_every_listener_is_on_loopback(
        daemon_factory: type[DaemonProcess]) -> None:
    if not (_port_free(socket.SOCK_STREAM, 1883) and _port_free(socket.SOCK_DGRAM, 5683)):
        pytest.skip("the default ports 1883/tcp or 5683/udp are taken on this machine")
    d = daemon_factory(CONFIG)
    added = gatewayctl("clients", "add", "sensor", "--config", str(d.config_path))
    assert added.returncode == 0, added.stderr
    d.start()
    d.wait_ready()
    d.wait_status(lambda s: s["components"]["local-mqtt"]["state"] == "running"
                  and s["components"]["local-coap"]["state"] == "running")
    assert d.proc is not None
    sockets = bound_sockets(d.proc.pid)
    listening = [(proto, address, port) for proto, state, address, port in sockets
                 if (proto.startswith("tcp") and state == TCP_LISTEN)
                 or (proto.startswith("udp") and state == UDP_UNCONNECTED)]
    assert {(proto[:3], port) for proto, _, port in listening} >= {("tcp", 1883),
                                                                   ("udp", 5683)}
    assert all(is_loopback(address) for _, address, _ in listening), listening
