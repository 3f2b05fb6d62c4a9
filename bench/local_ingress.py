"""Local ingest throughput: QoS-1 publishes to the embedded broker of a running
``gatewayd``, each PUBACK sent only after its reading is committed to SQLite.

Starts the daemon (``gatewayd run``, a subprocess) with ``[local.mqtt]`` on a free
loopback port, then ``--publishers`` paho clients (one thread each, up to
``--inflight`` unacknowledged messages each) publish ``--messages`` QoS-1 values
in all, and the time until the last PUBACK gives messages/s. The same clients
then publish the same load to Debian's Mosquitto (which acknowledges from
memory) for the peer ratio. Figures are printed, never asserted.

    .venv/bin/python bench/local_ingress.py [--messages 5000] [--publishers 10]
        [--inflight 20] [--ack-delay 20ms] [--durability batched]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.local.clients import make_record, new_key, save_clients
from gatewayd.local.tokens import mint_token
from tests.peers.mosquitto import Mosquitto, free_port
from tests.support.daemon import DaemonProcess

CONFIG = """
[gateway]
id = "gw-bench"

[buffer]
durability = "{durability}"

[local]
clients_file = "{clients}"
ack_delay = "{ack_delay}"

[local.mqtt]
listen = ["127.0.0.1:{port}"]
publish_telemetry = false
"""


class Flood:
    """``publishers`` paho clients sharing ``messages`` QoS-1 publishes."""

    def __init__(self, port: int, *, publishers: int, messages: int, inflight: int,
                 username: str | None = None, password: str | None = None) -> None:
        self.done = threading.Semaphore(0)
        self.acked = 0
        self._lock = threading.Lock()
        self.clients = []
        for i in range(publishers):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench/{i}",
                            protocol=paho.MQTTv311)
            if username:
                c.username_pw_set(username, password)
            c.max_inflight_messages_set(inflight)
            c.max_queued_messages_set(0)
            c.on_publish = self._on_publish
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)
        self.messages = messages

    def _on_publish(self, *_: object) -> None:
        with self._lock:
            self.acked += 1
            if self.acked == self.messages:
                self.done.release()

    def run(self) -> float:
        """Publish everything; messages/s until the last PUBACK."""
        start = time.perf_counter()
        per = self.messages // len(self.clients)
        for n, c in enumerate(self.clients):
            count = per + (1 if n < self.messages % len(self.clients) else 0)
            for i in range(count):
                c.publish(f"devices/bench/p{n}", str(i), qos=1)
        if not self.done.acquire(timeout=300):
            raise TimeoutError(f"only {self.acked} of {self.messages} acknowledged")
        return self.messages / (time.perf_counter() - start)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--publishers", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=20)
    ap.add_argument("--ack-delay", default="20ms")
    ap.add_argument("--durability", default="batched", choices=("batched", "every-commit"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        root = Path(tmp)
        key = new_key()
        save_clients(root / "clients.toml", {"bench": make_record("bench", key=key)})
        port = free_port()
        daemon = DaemonProcess(root / "d", CONFIG.format(
            clients=root / "clients.toml", ack_delay=args.ack_delay, port=port,
            durability=args.durability))
        daemon.start()
        try:
            daemon.wait_ready()
            daemon.wait_status(lambda st: bool(
                st["components"].get("local-mqtt", {}).get("health", {}).get("listening")))
            flood = Flood(port, publishers=args.publishers, messages=args.messages,
                          inflight=args.inflight, username="bench",
                          password=mint_token("bench", key, ttl=3600))
            ours = flood.run()
            flood.close()
            health = daemon.status()["components"]["local-mqtt"]["health"]
            buf = daemon.status()["buffer"]
        finally:
            daemon.close()

        with Mosquitto(root / "mosquitto") as mosq:
            flood = Flood(mosq.port, publishers=args.publishers, messages=args.messages,
                          inflight=args.inflight)
            peer = flood.run()
            flood.close()

    print(f"local ingest, {args.messages} QoS-1 messages from {args.publishers} publishers, "
          f"{args.inflight} in flight each, ack_delay {args.ack_delay}, "
          f"durability {args.durability}")
    print(f"  gatewayd (PUBACK after SQLite commit): {ours:8.0f} msg/s "
          f"({health['readings']} readings committed in {buf['commits']} commits)")
    print(f"  mosquitto 2.0 (PUBACK from memory):    {peer:8.0f} msg/s")
    print(f"  ratio gatewayd / mosquitto:            {ours / peer:8.2f}")


if __name__ == "__main__":
    main()
