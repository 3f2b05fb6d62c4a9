"""Helpers of the uplink tests: uplink configs, running uplinks, the buffer under test."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gatewayd.reading import Reading
from gatewayd.uplink.batching import UplinkBuffer
from gatewayd.uplink.config import AuthConfig, UplinkConfig
from gatewayd.uplink.mqtt import MqttUplink

GATEWAY = "gw-test"
USERS = {"gw-user": "s3cret-pass"}


def uplink_config(url: str, *, name: str = "cloud", auth: AuthConfig | None = None,
                  **overrides: object) -> UplinkConfig:
    """An UplinkConfig as the schema would build it, with quick test timings."""
    scheme, _, rest = url.partition("://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    cfg = UplinkConfig(
        name=name, url=url, scheme=scheme, host=host, port=int(port),
        ws_path="/" + path if path else "/mqtt", topic_prefix=f"gateways/{GATEWAY}",
        auth=auth or AuthConfig(type="none"), select=("*",), client_id=f"{GATEWAY}-{name}",
        protocol="3.1.1", format="json", ca_file=None, max_records=500,
        max_bytes=256 * 1024, max_delay=0.05, max_inflight=16, keepalive=30.0,
        connect_timeout=5.0, backoff_initial=0.05, backoff_max=0.2, drain_rate=0,
        enabled=True,
    )
    return dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running(*uplinks: MqttUplink) -> AsyncIterator[None]:
    """Run the uplinks in a task group; cancel them (a clean stop) on exit."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(u.run()) for u in uplinks]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


@dataclass
class Store:
    """The buffer under test and how a test commits readings to it."""

    buffer: UplinkBuffer
    add: Callable[[Sequence[Reading]], Awaitable[None]]
    last_id: Callable[[], int]
