"""Fixtures of the uplink tests: TLS material, a real Mosquitto, the real Buffer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gatewayd.buffer import Buffer
from gatewayd.config.schema import BufferConfig, IdentityConfig
from gatewayd.reading import Reading
from tests.peers.mosquitto import Mosquitto
from tests.peers.pki import Pki, make_pki
from tests.uplink.helpers import GATEWAY, USERS, Store


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), gateway_id=GATEWAY)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", pki=pki, users=USERS, websockets=True) as m:
        yield m


@pytest.fixture
def identity(pki: Pki) -> IdentityConfig:
    return IdentityConfig(key_file=pki.client.key, cert_file=pki.client.cert)


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """Open a real Buffer (SQLite file in tmp_path) serving the named uplinks, each
    selecting everything. ``Store.add`` commits at once (no commit loop needed)."""
    opened: list[Buffer] = []

    async def make(uplinks: Sequence[str]) -> Store:
        config = BufferConfig(path=tmp_path / f"buffer-{len(opened)}.sqlite",
                              max_size=64 * 1024 * 1024, commit_interval=0.01,
                              durability="batched", max_pending=1_000_000)
        buffer = Buffer(config, uplinks={name: ("*",) for name in uplinks})
        await buffer.open()
        opened.append(buffer)

        async def add(readings: Sequence[Reading]) -> None:
            buffer.submit(readings)
            await buffer.flush()

        return Store(buffer, add, buffer.last_id)

    try:
        yield make
    finally:
        for buffer in opened:
            await buffer.close()
