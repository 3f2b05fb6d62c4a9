"""``gatewayd run`` with coap devices against libcoap's server: polled and observed
readings show in status, a dead device is only its own problem, and the
device recovers when its server comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.coap_libcoap import LibcoapServer, free_udp_port
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(90)

CONFIG = """
[gateway]
id = "gw-coap"

[buffer]
commit_interval = "50ms"

[devices.room]
driver = "coap"
url = "{url}"
poll = "200ms"
timeout = "1s"
ack_timeout = "300ms"
retry_delay = "100ms"
retry_delay_max = "500ms"
observe_refresh = "1s"
resources = [
  {{ path = "/sensors/temp", name = "temp", unit = "Cel" }},
  {{ path = "/sensors/env", name = "hum", format = "json", field = "hum", unit = "%RH" }},
  {{ path = "/count", name = "count", mode = "observe" }},
]

[devices.gone]
driver = "coap"
url = "coap://127.0.0.1:{dead_port}"
poll = "200ms"
timeout = "1s"
ack_timeout = "300ms"
retry_delay = "100ms"
retry_delay_max = "500ms"
resources = [{{ path = "/x", name = "x" }}]
"""


@pytest.fixture
def libcoap() -> Iterator[LibcoapServer]:
    with LibcoapServer() as server:
        yield server


def health(st: dict[str, Any], device: str) -> dict[str, Any]:
    h: dict[str, Any] = st["components"][f"device:{device}"]["health"]
    return h


def value(st: dict[str, Any], device: str, point: str) -> Any:
    return health(st, device)["values"].get(point, {}).get("value")


def test_daemon_polls_and_observes_coap_devices(daemon_factory: type[DaemonProcess],
                                                libcoap: LibcoapServer) -> None:
    libcoap.put("/sensors/temp", "21.5")
    libcoap.put("/sensors/env", json.dumps({"hum": 40}))
    libcoap.put("/count", "0")
    d = daemon_factory(CONFIG.format(url=libcoap.url, dead_port=free_udp_port()))
    d.start()
    d.wait_ready()
    st = d.wait_status(lambda st: value(st, "room", "temp") == 21.5
                       and value(st, "room", "hum") == 40 and value(st, "room", "count") == 0
                       and health(st, "room")["resources"]["/count"]["observing"])
    assert health(st, "room")["values"]["temp"]["unit"] == "Cel"
    for i in (1, 2, 3):
        libcoap.put("/count", str(i))
    libcoap.put("/sensors/temp", "-4.5")
    st = d.wait_status(lambda st: value(st, "room", "count") == 3
                       and value(st, "room", "temp") == -4.5
                       and health(st, "gone")["consecutive_failures"] >= 2)
    room, gone = health(st, "room"), health(st, "gone")
    assert room["state"] == "reachable" and room["readings"] > 3
    assert room["notifications"] >= 3 and room["timeouts"] == 0
    assert gone["state"] == "unreachable" and gone["readings"] == 0
    assert gone["last_error"] == "Connection refused"
    assert gone["requests"] <= gone["consecutive_failures"] + 1  # one try at a time
    assert st["components"]["device:gone"]["state"] == "running"  # its retries are its own

    libcoap.kill()
    st = d.wait_status(lambda st: health(st, "room")["state"] == "unreachable")
    readings_down = health(st, "room")["readings"]
    libcoap.start()
    libcoap.put("/count", "10")
    libcoap.put("/sensors/temp", "22")
    libcoap.put("/sensors/env", json.dumps({"hum": 41}))
    st = d.wait_status(lambda st: value(st, "room", "count") == 10
                       and value(st, "room", "temp") == 22
                       and health(st, "room")["state"] == "reachable")
    assert health(st, "room")["readings"] > readings_down
    assert health(st, "room")["registrations"] >= 2

    out = d.ctl("status")
    assert out.returncode == 0 and "room" in out.stdout and "gone" in out.stdout
    d.stop()
    assert d.proc is not None and d.proc.returncode == 0
    assert "Traceback" not in d.log_text()
