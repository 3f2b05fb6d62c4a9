"""The remote-access tunnel, printed (never asserted), against Debian's real sshd.

1. Time to up: from ``open()`` of an on-demand tunnel to ssh confirming every
   forward, median of N opens, for the tcp transport and the websocket
   transport (gatewayd-wsproxy through a ``websockets`` relay, and through
   Debian's websockify).
2. Throughput: MiB/s of an echo round trip through the bastion's forwarded
   port, against the same echo reached directly (the ratio is the tunnel's
   cost), for each transport.
3. Recovery: sshd killed and started again at once: time until the tunnel is
   up again (backoff_initial 100ms).

Usage: .venv/bin/python bench/tunnel.py [--opens N] [--mib N]
Needs openssh-server, openssh-client and websockify (root, or /run/sshd present).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatewayd.tunnel.runner import ReverseTunnel
from tests.peers.mosquitto import free_port
from tests.peers.pki import make_pki
from tests.peers.sshd import Sshd, make_key
from tests.tunnel.tunnel_support import (
    EchoServer,
    Websockify,
    WsRelay,
    tunnel_config,
)

CHUNK = 64 * 1024


async def round_trip(port: int, total: int) -> float:
    """Seconds to send ``total`` bytes to 127.0.0.1:port and read them back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = os.urandom(CHUNK)
    started = time.perf_counter()

    async def send() -> None:
        sent = 0
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    async def receive() -> None:
        got = 0
        while got < total:
            data = await reader.read(1 << 20)
            if not data:
                raise RuntimeError("connection closed early")
            got += len(data)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        tg.create_task(receive())
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def wait_for(tunnel: ReverseTunnel, state: str) -> None:
    async with asyncio.timeout(60):
        await tunnel.watch(lambda h: h["state"] == state)


@asynccontextmanager
async def running(tunnel: ReverseTunnel) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(tunnel.run())
        try:
            yield
        finally:
            task.cancel()


async def bench(opens: int, mib: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    pki = make_pki(root / "pki")
    key = root / "key"
    public = make_key(key)
    sshd = Sshd(root / "sshd")
    remote = free_port()
    sshd.authorize(public, listen=[f"127.0.0.1:{remote}"])
    sshd.start()
    total = mib * 1024 * 1024
    results: dict[str, dict[str, Any]] = {}
    try:
        with EchoServer() as echo:
            direct = min([await round_trip(echo.port, total) for _ in range(3)])
            results["direct (no tunnel)"] = {"mib_s": mib / direct}
            async with AsyncExitStack() as stack:
                relay = await stack.enter_async_context(WsRelay(pki, sshd.port))
                websockify = stack.enter_context(Websockify(pki, sshd.port))
                transports = {
                    "tcp": {},
                    "websocket (websockets relay)": {"transport": "websocket", "url": relay.url,
                                                     "ca_file": str(pki.ca)},
                    "websocket (websockify)": {"transport": "websocket", "url": websockify.url,
                                               "ca_file": str(pki.ca)},
                }
                for label, extra in transports.items():
                    table = {
                        "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                        "host_key": sshd.host_key, "key_file": str(key),
                        "forwards": [{"remote": f"127.0.0.1:{remote}",
                                      "local": f"127.0.0.1:{echo.port}"}],
                        "mode": "on-demand", "backoff_initial": "100ms", "backoff_max": "1s",
                        **extra,
                    }
                    tunnel = ReverseTunnel(tunnel_config(table), runtime_dir=root / "run")
                    async with running(tunnel):
                        await wait_for(tunnel, "closed")
                        ups = []
                        for _ in range(opens):
                            started = time.perf_counter()
                            await tunnel.open(600)
                            await wait_for(tunnel, "up")
                            ups.append(time.perf_counter() - started)
                            await tunnel.close()
                            await asyncio.to_thread(sshd.wait_no_sessions)
                        await tunnel.open(600)
                        await wait_for(tunnel, "up")
                        best = min([await round_trip(remote, total) for _ in range(3)])
                        entry = {"up_median_s": statistics.median(ups),
                                 "up_max_s": max(ups), "mib_s": mib / best,
                                 "vs_direct": direct / best}
                        if label == "tcp":
                            started = time.perf_counter()
                            await asyncio.to_thread(sshd.kill)
                            await asyncio.to_thread(sshd.start)
                            await tunnel.watch(lambda h: h["ups"] >= opens + 2 and h["up"])
                            entry["recovery_s"] = time.perf_counter() - started
                        await tunnel.close()
                        await asyncio.to_thread(sshd.wait_no_sessions)
                    results[label] = entry
    finally:
        sshd.stop()
    print(f"tunnel bench: {opens} opens per transport, {mib} MiB echo round trips "
          f"(best of 3), OpenSSH on loopback")
    for label, entry in results.items():
        parts = [f"{entry['mib_s']:8.1f} MiB/s"]
        if "vs_direct" in entry:
            parts.append(f"{entry['vs_direct']:.2f}x of direct")
            parts.append(f"up in {entry['up_median_s'] * 1000:.0f} ms median "
                         f"({entry['up_max_s'] * 1000:.0f} ms max)")
        if "recovery_s" in entry:
            parts.append(f"back {entry['recovery_s'] * 1000:.0f} ms after sshd kill+start")
        print(f"  {label:<30} " + ", ".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--opens", type=int, default=5)
    p.add_argument("--mib", type=int, default=64)
    args = p.parse_args()
    asyncio.run(bench(args.opens, args.mib))


if __name__ == "__main__":
    main()
