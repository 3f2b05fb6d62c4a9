"""JWT auth checked by a broker: amqtt in-process, verifying the ES256 token with the
gateway's public key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from amqtt.broker import Broker
from cryptography.hazmat.primitives import serialization

from gatewayd.config.schema import IdentityConfig
from gatewayd.reading import Reading
from gatewayd.uplink.config import AuthConfig
from gatewayd.uplink.mqtt import MqttUplink
from tests.peers.mosquitto import free_port
from tests.peers.pki import Pki
from tests.uplink.helpers import GATEWAY, Store, running, uplink_config
from tests.uplink.jwt_broker import GatewayJwtAuthPlugin, broker_config
from tests.uplink.proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def jwt_broker(pki: Pki) -> AsyncIterator[int]:
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    port = free_port()
    broker = Broker(broker_config(port, public.decode(), audience="central.example"))
    GatewayJwtAuthPlugin.verdicts.clear()
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()


async def _watch(uplink: MqttUplink, predicate: Callable[[dict[str, Any]], bool]) -> None:
    try:
        async with asyncio.timeout(15):
            await uplink.watch(predicate)
    except TimeoutError:
        raise AssertionError(f"health never matched; last: {uplink.health()}") from None


async def test_token_signed_with_the_gateway_key_is_accepted_and_fresh_at_each_connect(
        jwt_broker: int, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    store: Store = await make_store(("cloud",))
    await store.add([Reading("d", "p", i, None, 1_800_000_000_000_000_000 + i)
                     for i in range(100)])
    async with TcpProxy(jwt_broker) as proxy:
        cfg = uplink_config(f"mqtt://127.0.0.1:{proxy.port}", auth=AuthConfig(
            type="jwt", jwt_ttl=120.0, jwt_audience="central.example"))
        uplink = MqttUplink(cfg, buffer=store.buffer, gateway_id=GATEWAY, identity=identity,
                            version="1")
        async with running(uplink):
            await _watch(uplink, lambda h: h["cursor"] == store.last_id())
            proxy.cut()  # a reconnect must present a new token
            await _watch(uplink, lambda h: h["connects"] == 2)
    verdicts = GatewayJwtAuthPlugin.verdicts
    assert [v.accepted for v in verdicts] == [True, True]
    assert verdicts[0].token != verdicts[1].token
    for v in verdicts:
        assert v.username == GATEWAY
        assert v.claims is not None
        assert (v.claims["iss"], v.claims["sub"], v.claims["aud"]) == \
            (GATEWAY, GATEWAY, "central.example")
        assert v.claims["exp"] - v.claims["iat"] == 120
        assert jwt.get_unverified_header(v.token or "")["alg"] == "ES256"


async def test_token_signed_by_another_key_is_refused(
        jwt_broker: int, pki: Pki, identity: IdentityConfig,
        make_store: Callable[..., Any]) -> None:
    store: Store = await make_store(("cloud",))
    cfg = uplink_config(f"mqtt://127.0.0.1:{jwt_broker}", auth=AuthConfig(
        type="jwt", key_file=pki.other_client.key, jwt_audience="central.example"))
    uplink = MqttUplink(cfg, buffer=store.buffer, gateway_id=GATEWAY, identity=identity,
                        version="1")
    async with running(uplink):
        await _watch(uplink, lambda h: h["connect_attempts"] >= 2 and h["state"] == "backoff")
    health = uplink.health()
    assert health["connects"] == 0
    assert health["last_error"] == "broker refused the connection: Not authorized"
    assert [(v.accepted, v.reason) for v in GatewayJwtAuthPlugin.verdicts[:2]] == \
        [(False, "InvalidSignatureError")] * 2


async def test_token_for_another_audience_is_refused(
        jwt_broker: int, identity: IdentityConfig, make_store: Callable[..., Any]) -> None:
    store: Store = await make_store(("cloud",))
    cfg = uplink_config(f"mqtt://127.0.0.1:{jwt_broker}", auth=AuthConfig(
        type="jwt", jwt_audience="somewhere.else"))
    uplink = MqttUplink(cfg, buffer=store.buffer, gateway_id=GATEWAY, identity=identity,
                        version="1")
    async with running(uplink):
        await _watch(uplink, lambda h: h["connect_attempts"] >= 1 and h["state"] == "backoff")
    assert GatewayJwtAuthPlugin.verdicts[0].reason == "InvalidAudienceError"
