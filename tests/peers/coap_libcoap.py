"""libcoap's example CoAP server and client from Debian (libcoap3-bin, 4.3.1).

``coap-server-notls`` serves, among others, ``/time`` (observable; ``?ticks``
gives seconds since the epoch, notified every second with Max-Age 1) and,
with ``-d N``, up to N resources created by PUT on any path; a created
resource is observable and notifies every PUT. ``coap-client-notls`` is the
second real client the tests use to PUT values and to GET what was written.

The server binds 127.0.0.1 on a port free for UDP and TCP (libcoap listens on
both). Readiness is a CoAP ping (an empty confirmable message) answered with
a Reset.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from types import TracebackType

SERVER = "/usr/bin/coap-server-notls"
CLIENT = "/usr/bin/coap-client-notls"


def free_udp_port() -> int:
    """A loopback port free for both UDP and TCP at the moment."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")


def coap_ping(port: int, *, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when a CoAP endpoint answers an empty CON with a Reset of the same id."""
    mid = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(struct.pack("!BBH", 0x40, 0, mid), (host, port))
            data = s.recv(64)
        except OSError:  # timeout, or ICMP port unreachable
            return False
    return len(data) >= 4 and data[0] >> 4 == 0x7 and struct.unpack("!H", data[2:4])[0] == mid


def wait_ping(port: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not coap_ping(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"no CoAP endpoint answers on 127.0.0.1:{port}")


class LibcoapServer:
    """One ``coap-server-notls`` process; ``restart`` keeps the port."""

    def __init__(self, *, port: int | None = None, dynamic: int = 16) -> None:
        self.port = port or free_udp_port()
        self.dynamic = dynamic
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def start(self) -> int:
        self.proc = subprocess.Popen(
            [SERVER, "-A", "127.0.0.1", "-p", str(self.port), "-d", str(self.dynamic)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ping(self.port)
        except AssertionError:
            self.kill()
            raise
        self.starts += 1
        return self.port

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word to its observers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def put(self, path: str, payload: str, *, content_format: int | None = None) -> None:
        """PUT with libcoap's own client (creates the resource under ``-d``)."""
        argv = [CLIENT, "-m", "put", "-e", payload]
        if content_format is not None:
            argv += ["-t", str(content_format)]
        out = subprocess.run([*argv, self.url + path], capture_output=True, timeout=20,
                             check=False)
        assert out.returncode == 0, out.stderr

    def get(self, path: str) -> bytes:
        """GET with libcoap's own client: the payload."""
        out = subprocess.run([CLIENT, "-m", "get", self.url + path], capture_output=True,
                             timeout=20, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout.rstrip(b"\n")

    def __enter__(self) -> LibcoapServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()
