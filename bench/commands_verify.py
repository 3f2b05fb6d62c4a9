"""Cost of checking a signed command, and of remembering its jti durably.

Measures, on this machine:
(a) token verification per second (gatewayd.commands.token.verify_token) for ES256
    and EdDSA, against pyjwt's own ``jwt.decode`` with the same key and checks
    (the peer: what a caller of the library would write);
(b) the whole decision (CommandGate.admit: token, replay cache, rate limits,
    command, scope, write limits) per second;
(c) the latency of one replay-journal append with fsync (what every accepted
    command waits for before it acts) in the state directory's file system.

    .venv/bin/python bench/commands_verify.py [--tokens 2000] [--dir /var/lib/gatewayd]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt

from gatewayd.commands.config import CommandsConfig, RateLimit
from gatewayd.commands.gate import CommandGate
from gatewayd.commands.keys import load_trusted_keys
from gatewayd.commands.replay import ReplayCache, ReplayJournal
from gatewayd.commands.token import TokenRules, verify_token
from gatewayd.driver import DeviceConfig
from tests.commands.command_support import (
    GATEWAY,
    Operator,
    claims,
    eddsa,
    es256,
    write_cmd,
    write_trusted,
)


@dataclass(frozen=True)
class Range:
    min: float
    max: float


@dataclass(frozen=True)
class Point:
    name: str
    writable: Range


@dataclass(frozen=True)
class Options:
    points: tuple[Point, ...]


def tokens(op: Operator, n: int) -> list[bytes]:
    return [op.sign(claims(write_cmd("boiler", "setpoint", 42), scope="write:boiler/*"))
            for _ in range(n)]


def rate(fn: object, items: list[bytes]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)  # type: ignore[operator]
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to measure the fsync'd append (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cmdbench-"))
    ops = [es256("ops"), eddsa("ops-ed"), es256("spare")]
    keys = load_trusted_keys(write_trusted(work / "trusted", *ops))
    rules = TokenRules(audience=GATEWAY, max_lifetime=300, clock_skew=30)
    print(f"{args.tokens} tokens each, 3 trusted keys")
    for op in ops[:2]:
        batch = tokens(op, args.tokens)
        ours = rate(lambda t: verify_token(t, keys, rules, now=time.time()), batch)
        public = op.key.public_key()
        theirs = rate(lambda t, k=public, a=op.algorithm: jwt.decode(
            t, k, algorithms=[a], audience=GATEWAY, leeway=30,
            options={"require": ["exp", "iat", "jti", "aud"]}), batch)
        print(f"  verify {op.algorithm:<6} gatewayd {ours:8.0f}/s   pyjwt.decode "
              f"{theirs:8.0f}/s   ratio {ours / theirs:.2f}")
    device = DeviceConfig("boiler", "modbus", 0, True, Options((Point("setpoint",
                                                                      Range(20, 80)),)))
    gate = CommandGate(CommandsConfig(rate_limit=RateLimit(10**6, 1),
                                      point_rate_limit=RateLimit(10**6, 1)),
                       gateway_id=GATEWAY, keys=keys, replay=ReplayCache())
    batch = tokens(ops[0], args.tokens)
    admitted = rate(lambda t: gate.admit(t, now=time.time(), monotonic=time.monotonic(),
                                         device_config=lambda _: device,
                                         tunnel_configured=lambda: False), batch)
    print(f"  whole decision (ES256)          {admitted:8.0f}/s")
    directory = args.dir or work
    journal = ReplayJournal(directory / f"bench-replay-{uuid.uuid4().hex}.jsonl")
    lat = []
    for i in range(200):
        t0 = time.perf_counter()
        journal.append(f"jti-{i}", time.time() + 300)
        lat.append((time.perf_counter() - t0) * 1000)
    journal.path.unlink()
    lat.sort()
    print(f"  replay journal append+fsync in {directory}: median "
          f"{statistics.median(lat):.2f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms")


if __name__ == "__main__":
    main()
