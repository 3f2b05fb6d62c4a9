"""The uplink's command downlink alone (MqttUplink in-process): with Debian's Mosquitto
the handler gets each command and its result is published; an amqtt broker that
refuses the subscription leaves telemetry running."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig, IdentityConfig
from gatewayd.reading import Reading
from gatewayd.uplink.mqtt import MqttUplink
from tests.peers.mosquitto import Mosquitto, Subscriber, free_port
from tests.uplink.helpers import GATEWAY, running, uplink_config

pytestmark = pytest.mark.timeout(60)

PREFIX = f"gateways/{GATEWAY}"
IDENTITY = IdentityConfig(key_file=Path("/nonexistent/key"), cert_file=Path("/nonexistent/crt"))


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[Buffer]:
    buf = Buffer(BufferConfig(path=tmp_path / "b.sqlite", max_size=16 * 2**20,
                              commit_interval=0.01, durability="batched",
                              max_pending=10_000), uplinks={"cloud": ("*",)})
    await buf.open()
    try:
        yield buf
    finally:
        await buf.close()


async def watch(uplink: MqttUplink, predicate: object) -> dict[str, object]:
    async with asyncio.timeout(20):
        return await uplink.watch(predicate)  # type: ignore[arg-type]


async def publish(port: int, topic: str, payload: bytes, *, retain: bool = False,
                  user: tuple[str, str] | None = None) -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
            "-m", payload.decode()]
    if retain:
        args.append("-r")
    if user:
        args += ["-u", user[0], "-P", user[1]]
    proc = await asyncio.create_subprocess_exec(*args)
    assert await proc.wait() == 0


async def test_commands_reach_the_handler_and_results_go_back(tmp_path: Path,
                                                              buffer: Buffer) -> None:
    seen: list[tuple[str, bytes]] = []

    async def handler(topic: str, payload: bytes) -> bytes:
        seen.append((topic, payload))
        return json.dumps({"echo": payload.decode()}).encode()

    async with Mosquitto(tmp_path / "broker") as broker:
        await publish(broker.port, f"{PREFIX}/commands/old", b"stale", retain=True)
        results = Subscriber(broker.port, f"{PREFIX}/commands/#")
        await asyncio.to_thread(results.start)
        uplink = MqttUplink(uplink_config(f"mqtt://127.0.0.1:{broker.port}", commands=True),
                            buffer=buffer, gateway_id=GATEWAY, identity=IDENTITY,
                            version="test", commands=handler)
        async with running(uplink):
            await watch(uplink, lambda h: h["commands"]["subscribed"])
            await publish(broker.port, f"{PREFIX}/commands/a", b"one")
            await publish(broker.port, f"{PREFIX}/commands/a/b", b"too deep")
            await publish(broker.port, f"{PREFIX}/commands/c", b"two")
            health = await watch(uplink, lambda h: h["commands"]["results_published"] == 2)
            # Acknowledged by the broker is not yet delivered to the subscriber: wait for it.
            await asyncio.to_thread(
                results.wait_until,
                lambda m: sum(1 for x in m if x.topic.endswith("/result")) >= 2, 20,
                "both results")
        await asyncio.to_thread(results.stop)
    assert seen == [(f"{PREFIX}/commands/a", b"one"), (f"{PREFIX}/commands/c", b"two")]
    got = {m.topic: json.loads(m.payload) for m in results.snapshot()
           if m.topic.endswith("/result")}
    assert got == {f"{PREFIX}/commands/a/result": {"echo": "one"},
                   f"{PREFIX}/commands/c/result": {"echo": "two"}}
    # the retained command is ignored; the deeper topic is not subscribed at all
    commands = health["commands"]
    assert isinstance(commands, dict)
    assert (commands["received"], commands["ignored"], commands["dropped"]) == (2, 1, 0)


class DenyCommandsPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic filter: every topic allowed except subscribing to command topics
    (Mosquitto 2.0 grants any subscription and filters at delivery instead)."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Session | None = None,
                              topic: str | None = None, action: Action | None = None) -> bool:
        return not (action == Action.SUBSCRIBE and topic is not None and "/commands/" in topic)


async def test_a_refused_subscription_leaves_telemetry_running(buffer: Buffer) -> None:
    async def handler(topic: str, payload: bytes) -> bytes:
        raise AssertionError("no command can arrive")

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    port = free_port()
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                 {"allow_anonymous": True},
                                 f"{__name__}.DenyCommandsPlugin": {}}})
    await broker.start()
    try:
        uplink = MqttUplink(uplink_config(f"mqtt://127.0.0.1:{port}", commands=True),
                            buffer=buffer, gateway_id=GATEWAY, identity=IDENTITY,
                            version="test", commands=handler)
        buffer.submit([Reading("d", "p", i, None, 1_800_000_000_000_000_000 + i)
                       for i in range(10)])
        await buffer.flush()
        async with running(uplink):
            health = await watch(uplink, lambda h: h["acked_readings"] == 10)
    finally:
        await broker.shutdown()
    assert health["connected"] is True and health["last_error"] is None
    commands = health["commands"]
    assert isinstance(commands, dict) and commands["subscribed"] is False
