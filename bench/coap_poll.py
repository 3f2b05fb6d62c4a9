"""CoAP polling cost: D coap devices x R resources at 1 s against libcoap's server.

libcoap's ``coap-server-notls`` (Debian libcoap3-bin) runs as its own process
with R resources created by PUT. The coap driver polls them from D devices
(each its own UDP socket and tasks), and then, as the peer, a bare aiocoap
client sends the same GETs on the same schedule (one context, one gather per
second, payloads not decoded). Prints, without asserting:

- requests and answers per second, late and skipped polls (driver);
- CPU% of this process for each (the server's CPU is not counted);
- the ratio driver / bare aiocoap: what decoding, scheduling and status cost.

    .venv/bin/python bench/coap_poll.py [--quick] [--json PATH] [--devices 20]
        [--resources 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiocoap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatewayd.drivers.coap.driver import CoapDriver

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.driver import DeviceConfig
from gatewayd.reading import Reading
from tests.peers.coap_libcoap import LibcoapServer


class CountingSink:
    def __init__(self) -> None:
        self.readings = 0

    def submit(self, readings: Sequence[Reading]) -> None:
        self.readings += len(readings)


def make_driver(name: str, url: str, resources: int) -> CoapDriver:
    table = {"url": url, "poll": "1s", "timeout": "1s", "ack_timeout": "300ms",
             "resources": [{"path": f"/r{i}", "name": f"p{i}", "format": "json",
                            "field": "v", "unit": "Cel"} for i in range(resources)]}
    problems = Problems(Origins("bench"))
    section = Section(table, f"devices.{name}", problems)
    options = CoapDriver.parse_options(section)
    section.done()
    assert not problems.items, problems.items
    return CoapDriver(DeviceConfig(name=name, driver="coap", priority=0, enabled=True,
                                   options=options))


async def create_resources(url: str, count: int) -> None:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        for i in range(count):
            payload = json.dumps({"v": 20 + i / 10, "status": "ok"}).encode()
            msg = aiocoap.Message(code=aiocoap.PUT, uri=f"{url}/r{i}", payload=payload)
            answer = await ctx.request(msg).response
            assert answer.code.is_successful(), answer
    finally:
        await ctx.shutdown()


async def run_driver(url: str, devices: int, resources: int, seconds: float) -> dict[str, Any]:
    drivers = [make_driver(f"d{i}", url, resources) for i in range(devices)]
    sink = CountingSink()
    cpu0, wall0 = time.process_time(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(sink)) for d in drivers]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    health = [d.health() for d in drivers]
    return {
        "requests": sum(h["requests"] for h in health),
        "responses": sum(h["responses"] for h in health),
        "timeouts": sum(h["timeouts"] for h in health),
        "late_polls": sum(h["late_polls"] for h in health),
        "skipped_polls": sum(h["skipped_polls"] for h in health),
        "readings": sink.readings,
        "cpu_percent": 100 * cpu / wall,
        "wall_s": wall,
    }


async def run_bare(url: str, devices: int, resources: int, seconds: float) -> dict[str, Any]:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    answers = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        end = wall0 + seconds
        tick = wall0
        while tick < end:
            requests = [ctx.request(aiocoap.Message(code=aiocoap.GET, uri=f"{url}/r{i}"))
                        for _ in range(devices) for i in range(resources)]
            done = await asyncio.gather(*(r.response for r in requests),
                                        return_exceptions=True)
            answers += sum(1 for a in done if not isinstance(a, BaseException))
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    finally:
        await ctx.shutdown()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {"responses": answers, "cpu_percent": 100 * cpu / wall, "wall_s": wall}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with LibcoapServer(dynamic=args.resources + 8) as server:
        await create_resources(server.url, args.resources)
        driver = await run_driver(server.url, args.devices, args.resources, args.seconds)
        bare = await run_bare(server.url, args.devices, args.resources, args.seconds)
    return {
        "devices": args.devices, "resources": args.resources, "poll_s": 1.0,
        "driver": driver, "bare_aiocoap": bare,
        "cpu_ratio": driver["cpu_percent"] / bare["cpu_percent"] if bare["cpu_percent"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--resources", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    result = asyncio.run(main_async(args))
    d, b = result["driver"], result["bare_aiocoap"]
    print(f"coap poll: {args.devices} devices x {args.resources} resources at 1 s "
          f"against coap-server-notls, {d['wall_s']:.1f} s")
    print(f"  driver: {d['responses'] / d['wall_s']:.0f} answers/s "
          f"({d['requests']} requests, {d['timeouts']} timeouts, {d['late_polls']} late, "
          f"{d['skipped_polls']} skipped), {d['readings']} readings, "
          f"CPU {d['cpu_percent']:.1f} %")
    print(f"  bare aiocoap GETs: {b['responses'] / b['wall_s']:.0f} answers/s, "
          f"CPU {b['cpu_percent']:.1f} %")
    if result["cpu_ratio"] is not None:
        print(f"  CPU ratio driver / bare aiocoap: {result['cpu_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
