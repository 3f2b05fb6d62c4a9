"""A CoAP device made with aiocoap's server side (a second implementation next to
libcoap), run in the test's own event loop on 127.0.0.1 and a free UDP port.

Resources (every one observable; each GET or notification renders the current
payload and records it in ``rendered``):

- ``/number``: text, ``21.5`` at first; a PUT sets it (recorded in ``puts``);
- ``/env``: JSON ``{"temp": 21.5, "hum": 40, "status": "ok"}``;
- ``/senml``: SenML JSON, base name ``urn:dev:ow:10e2073a01080063:``, records
  ``temp`` (Cel), ``hum`` (%RH) and ``door`` (boolean);
- ``/senml-cbor``: the same pack in SenML CBOR;
- ``/cbor``: CBOR ``{"level": 7, "nested": {"v": -2.5}}``;
- ``/counter``: text, an integer the test (or ``tick``) increments; each
  increment is a notification;
- ``/plain``: text ``5`` with Max-Age 1, *not* observable (a plain resource).

``set(path, payload)`` replaces a payload (garbage included) and notifies
observers. ``stop()`` closes the socket without telling observers anything
(aiocoap does not cancel observations on shutdown); ``start()`` again reuses
the port, like a device that rebooted.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiocoap
import aiocoap.resource
import cbor2
from aiocoap.numbers.codes import Code

from tests.peers.coap_libcoap import free_udp_port

SENML_PACK = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.125},
    {"n": "hum", "u": "%RH", "v": 41},
    {"n": "door", "vb": True},
]
SENML_CBOR_PACK = [
    {-2: "urn:dev:ow:10e2073a01080063:", 0: "temp", 1: "Cel", 2: 23.125},
    {0: "hum", 1: "%RH", 2: 41},
    {0: "door", 4: True},
]
CONTENT_FORMATS = {"text": 0, "json": 50, "cbor": 60, "senml": 110, "senml-cbor": 112}


class PayloadResource(aiocoap.resource.ObservableResource):
    """One resource whose payload the test sets."""

    def __init__(self, payload: bytes, content_format: int, *, max_age: int | None,
                 writable: bool = False) -> None:
        super().__init__()
        self.payload = payload
        self.content_format = content_format
        self.max_age = max_age
        self.writable = writable
        self.rendered: list[bytes] = []
        self.puts: list[tuple[bytes, int | None]] = []
        self.observers = 0
        self.code = Code.CONTENT

    def update_observation_count(self, newcount: int) -> None:
        self.observers = newcount

    def set(self, payload: bytes) -> None:
        self.payload = payload
        self.updated_state()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        if self.code is not Code.CONTENT:
            return aiocoap.Message(code=self.code, payload=b"test says so")
        self.rendered.append(self.payload)
        msg = aiocoap.Message(code=Code.CONTENT, payload=self.payload,
                              content_format=self.content_format)
        if self.max_age is not None:
            msg.opt.max_age = self.max_age
        return msg

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        if not self.writable:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED)
        cf = request.opt.content_format
        self.puts.append((bytes(request.payload), None if cf is None else int(cf)))
        self.set(bytes(request.payload))
        return aiocoap.Message(code=Code.CHANGED)


class PlainResource(aiocoap.resource.Resource):
    """A resource that cannot be observed: answers without the Observe option."""

    def __init__(self) -> None:
        super().__init__()
        self.payload = b"5"
        self.gets = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.gets += 1
        msg = aiocoap.Message(code=Code.CONTENT, payload=self.payload, content_format=0)
        msg.opt.max_age = 1
        return msg


@dataclass
class AiocoapDevice:
    """The device: its resources and one server context on 127.0.0.1."""

    port: int = field(default_factory=free_udp_port)
    max_age: int | None = None  # Max-Age of every response (None: the option is left out)
    resources: dict[str, PayloadResource] = field(default_factory=dict)
    starts: int = 0
    _ctx: Any = None

    def __post_init__(self) -> None:
        ma = self.max_age
        self.resources = {
            "/number": PayloadResource(b"21.5", 0, max_age=ma, writable=True),
            "/env": PayloadResource(json.dumps({"temp": 21.5, "hum": 40, "status": "ok"})
                                    .encode(), 50, max_age=ma, writable=True),
            "/senml": PayloadResource(json.dumps(SENML_PACK).encode(), 110, max_age=ma),
            "/senml-cbor": PayloadResource(cbor2.dumps(SENML_CBOR_PACK), 112, max_age=ma),
            "/cbor": PayloadResource(cbor2.dumps({"level": 7, "nested": {"v": -2.5}}), 60,
                                     max_age=ma),
            "/counter": PayloadResource(b"0", 0, max_age=ma),
        }
        self.plain = PlainResource()
        self.counter = 0

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def __getitem__(self, path: str) -> PayloadResource:
        return self.resources[path]

    async def start(self) -> int:
        site = aiocoap.resource.Site()
        for path, res in self.resources.items():
            site.add_resource(tuple(path.strip("/").split("/")), res)
        site.add_resource(("plain",), self.plain)
        self._ctx = await aiocoap.Context.create_server_context(
            site, bind=("127.0.0.1", self.port), transports=["udp6"])
        self.starts += 1
        return self.port

    async def stop(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.shutdown()
            for res in self.resources.values():
                res._observations.clear()  # its observers are gone with the socket
                res.observers = 0

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def set(self, path: str, payload: bytes) -> None:
        self.resources[path].set(payload)

    def bump(self) -> int:
        """Increment the counter and notify its observers."""
        self.counter += 1
        self.resources["/counter"].set(str(self.counter).encode())
        return self.counter

    async def tick(self, count: int, *, every: float = 0.01) -> None:
        """Increment the counter ``count`` times, letting the loop send each."""
        for _ in range(count):
            self.bump()
            await asyncio.sleep(every)

    async def __aenter__(self) -> AiocoapDevice:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
