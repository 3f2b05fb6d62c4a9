"""The demo: gatewayd against simulated devices and a local MQTT broker.

Starts amqtt's broker on a free loopback port, runs ``gatewayd run`` with a
config written to a temporary directory, subscribes to the gateway's topics
and prints every SenML pack as it arrives. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

from amqtt.broker import Broker
from amqtt.client import MQTTClient

CONFIG = """\
[gateway]
id = "demo-gw"

[logging]
level = "info"

[devices.room]
driver = "sim"
poll = "1s"
points = [
  {{ name = "temp", signal = "sine", min = 18.0, max = 24.0, period = "60s", unit = "Cel" }},
  {{ name = "humidity", signal = "random_walk", min = 30.0, max = 60.0, seed = 7, unit = "%RH" }},
]

[devices.meter]
driver = "sim"
poll = "2s"
points = [
  {{ name = "pulses", signal = "counter" }},
  {{ name = "valve",  signal = "step", min = 0, max = 1, period = "10s" }},
]

[buffer]
commit_interval = "200ms"

[uplinks.local]
url = "mqtt://127.0.0.1:{port}"
topic_prefix = "gateways/demo-gw"
auth = {{ type = "none" }}
max_delay = "1s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def show(topic: str, payload: bytes) -> None:
    try:
        body = json.loads(payload)
    except ValueError:
        print(f"{topic}: {payload!r}", flush=True)
        return
    if isinstance(body, list) and body:
        base_t = body[0].get("bt", 0.0)
        print(f"{topic}: SenML pack of {len(body)} records, base name {body[0].get('bn')}",
              flush=True)
        for rec in body:
            value = next((rec[k] for k in ("v", "vb", "vs", "vd") if k in rec), None)
            unit = rec.get("u", "")
            print(f"    t={base_t + rec.get('t', 0.0):.3f}  {rec['n']:<16} {value} {unit}",
                  flush=True)
    else:
        print(f"{topic}: {json.dumps(body)}", flush=True)


async def main(duration: float | None) -> int:
    port = free_port()
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    })
    await broker.start()
    print(f"demo broker listening on 127.0.0.1:{port}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gatewayd-demo-") as tmp:
        root = Path(tmp)
        config = root / "gatewayd.toml"
        config.write_text(CONFIG.format(port=port))
        env = dict(os.environ, STATE_DIRECTORY=str(root / "state"),
                   RUNTIME_DIRECTORY=str(root / "run"))
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "run", "--config", str(config), env=env)
        client = MQTTClient(client_id="demo-subscriber")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await client.connect(f"mqtt://127.0.0.1:{port}/")
            await client.subscribe([("gateways/demo-gw/#", 1)])
            print("waiting for telemetry (Ctrl-C stops)", flush=True)
            async with asyncio.timeout(duration):
                while not stop.is_set():
                    get = asyncio.ensure_future(client.deliver_message())
                    halt = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait({get, halt},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    halt.cancel()
                    if get not in done:
                        get.cancel()
                        break
                    msg = get.result()
                    if msg is not None and msg.publish_packet is not None:
                        show(msg.topic, bytes(msg.publish_packet.payload.data))
        except TimeoutError:
            pass
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await daemon.wait()
            with contextlib.suppress(Exception):
                await client.disconnect()
            await broker.shutdown()
    print(f"demo stopped (daemon exit code {daemon.returncode})", flush=True)
    return 0 if daemon.returncode == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    sys.exit(asyncio.run(main(parser.parse_args().duration)))
