"""QoS-1 publish throughput of two asyncio MQTT clients to a local Mosquitto.

Starts Debian's Mosquitto on a free loopback port, then publishes the same
number of QoS-1 messages with many in flight through
(a) aiomqtt (on paho-mqtt), (b) amqtt's client and (c) gatewayd's own adapter
on paho-mqtt (gatewayd.uplink.connection), each publish awaiting its PUBACK,
and prints messages/s for each and the ratios.

    .venv/bin/python bench/mqtt_clients.py [--quick] [--json PATH] [--messages 20000]
        [--inflight 64] [--size 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
from amqtt.client import MQTTClient

from gatewayd.uplink.connection import ConnectionParams, MqttConnection
from tests.peers.mosquitto import Mosquitto

Publish = Callable[[str, bytes], Awaitable[object]]


async def _flood(publish: Publish, *, messages: int, inflight: int, size: int) -> float:
    """Messages/s for ``messages`` QoS-1 publishes, at most ``inflight`` unacknowledged."""
    payload = b"x" * size
    slots = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        try:
            await publish(f"bench/{i % 8}", payload)
        finally:
            slots.release()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(messages):
            await slots.acquire()
            tg.create_task(one(i))
    return messages / (time.perf_counter() - start)


async def bench_aiomqtt(port: int, *, messages: int, inflight: int, size: int) -> float:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-aiomqtt",
                              max_inflight_messages=inflight, timeout=60) as client:
        client.pending_calls_threshold = inflight + 1  # its per-publish warning is not free
        async def publish(topic: str, payload: bytes) -> None:
            await client.publish(topic, payload, qos=1)
        return await _flood(publish, messages=messages, inflight=inflight, size=size)


async def bench_amqtt(port: int, *, messages: int, inflight: int, size: int) -> float:
    client = MQTTClient(client_id="bench-amqtt", config={"auto_reconnect": False})
    await client.connect(f"mqtt://127.0.0.1:{port}/")
    try:
        async def publish(topic: str, payload: bytes) -> None:
            await client.publish(topic, payload, qos=1)
        return await _flood(publish, messages=messages, inflight=inflight, size=size)
    finally:
        await client.disconnect()


async def bench_gatewayd(port: int, *, messages: int, inflight: int, size: int) -> float:
    params = ConnectionParams(
        uplink="bench", host="127.0.0.1", port=port, client_id="bench-gatewayd",
        protocol="3.1.1", websocket_path=None, tls=None, username=None, password=None,
        keepalive=30, connect_timeout=5, will_topic="bench/status", will_payload=b"offline",
        max_inflight=inflight)
    conn = MqttConnection(params)
    await conn.connect()
    try:
        async def publish(topic: str, payload: bytes) -> None:
            await conn.publish(topic, payload)
        return await _flood(publish, messages=messages, inflight=inflight, size=size)
    finally:
        await conn.disconnect()


CLIENTS = {
    "aiomqtt 2.5.1 (paho-mqtt 2.2.0)": bench_aiomqtt,
    "amqtt 0.12.1 client": bench_amqtt,
    "gatewayd adapter (paho-mqtt 2.2.0)": bench_gatewayd,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 messages, one round")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--size", type=int, default=200, help="payload bytes")
    parser.add_argument("--rounds", type=int, help="runs per client (median shown)")
    args = parser.parse_args()
    args.messages = args.messages or (5_000 if args.quick else 20_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    logging.basicConfig(level=logging.ERROR)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as tmp:
        async with Mosquitto(Path(tmp)) as broker:
            opts = {"messages": args.messages, "inflight": args.inflight, "size": args.size}
            results: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for _ in range(args.rounds):
                for name, bench in CLIENTS.items():
                    results[name].append(await bench(broker.port, **opts))

    print(f"QoS-1 publishes to Mosquitto on loopback: {args.messages} messages of "
          f"{args.size} B, {args.inflight} in flight, median of {args.rounds} runs")
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    for name, rates in results.items():
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {name:36s} {medians[name]:>10,.0f} msg/s   (runs: {runs})")
    amqtt = medians["amqtt 0.12.1 client"]
    for name in ("aiomqtt 2.5.1 (paho-mqtt 2.2.0)", "gatewayd adapter (paho-mqtt 2.2.0)"):
        print(f"  ratio {name} / amqtt: {medians[name] / amqtt:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "bench": "mqtt_clients", "quick": args.quick, "messages": args.messages,
            "inflight": args.inflight, "size": args.size, "rounds": args.rounds,
            "load": os.getloadavg(), "msg_per_s": medians, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
