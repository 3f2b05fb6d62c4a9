"""Modbus polling cost: 10 units x 100 points at 1 s over TCP against a pymodbus server.

The server runs in a child process so that the CPU figure is the polling
process alone. Ten modbus devices (unit ids 1..10, 100 points each: 60
uint16, 20 float32, 10 int32 input registers, 10 coils) share one TCP
connection to it. Prints, without asserting:

- requests per cycle as planned and as received by the server, against one
  request per point;
- CPU% of the polling process over the run;
- cycle-time jitter: when each device's readings arrived, relative to the
  1 s wall-clock grid the cycles are aligned to, and the spread of the
  intervals between a device's cycles.

    .venv/bin/python bench/modbus_poll.py [--quick] [--json PATH] [--cycles 20] [--units 10]
        [--poll 1s]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatewayd.drivers.modbus.driver import ModbusDriver

from gatewayd.config.section import Origins, Problems, Section
from gatewayd.config.units import parse_duration
from gatewayd.driver import DeviceConfig
from gatewayd.reading import Reading
from tests.peers.modbus_pymodbus import PymodbusSlave, UnitMap


def unit_points() -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    points += [{"name": f"u{i}", "address": f"hr:{i}"} for i in range(60)]
    points += [{"name": f"f{i}", "address": f"hr:{100 + 2 * i}", "type": "float32"}
               for i in range(20)]
    points += [{"name": f"i{i}", "address": f"ir:{2 * i}", "type": "int32", "scale": 0.1}
               for i in range(10)]
    points += [{"name": f"c{i}", "address": f"co:{i}"} for i in range(10)]
    return points


def serve(units: int, conn: multiprocessing.connection.Connection) -> None:
    """The server process: answers until told to stop, then reports its request count."""

    async def main() -> None:
        maps = {u: UnitMap(hr={i: i * u for i in range(140)}, ir={i: i for i in range(20)},
                           co={i: bool(i % 2) for i in range(10)}) for u in range(1, units + 1)}
        async with PymodbusSlave(maps) as slave:
            conn.send(await slave.start_tcp())
            await asyncio.to_thread(conn.recv)  # the stop message
            conn.send(slave.count())

    asyncio.run(main())


class TimedSink:
    """Records when each device's batch arrived (wall clock, seconds)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.readings = 0
        self.done = asyncio.Event()
        self.target = 0

    def submit(self, readings: Sequence[Reading]) -> None:
        now = time.time()
        self.readings += len(readings)
        self.arrivals.setdefault(readings[0].device, []).append(now)
        if self.target and all(len(a) >= self.target for a in self.arrivals.values()):
            self.done.set()


def make_driver(name: str, port: int, unit: int, poll: str) -> ModbusDriver:
    problems = Problems(Origins("bench"))
    section = Section({"url": f"tcp://127.0.0.1:{port}", "unit_id": unit, "poll": poll,
                       "points": unit_points()}, f"devices.{name}", problems)
    options = ModbusDriver.parse_options(section)
    if problems.items:
        raise SystemExit("\n".join(str(p) for p in problems.items))
    return ModbusDriver(DeviceConfig(name=name, driver="modbus", priority=0, enabled=True,
                                     options=options))


async def poll(port: int, units: int, cycles: int, poll_text: str) -> tuple[
        list[ModbusDriver], TimedSink, float, float]:
    drivers = [make_driver(f"unit{u}", port, u, poll_text) for u in range(1, units + 1)]
    sink = TimedSink()
    sink.target = cycles + 1  # the first cycle warms up and is not measured
    wall0, cpu0 = time.monotonic(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(sink)) for d in drivers]
        async with asyncio.timeout(cycles * parse_duration(poll_text) * 3 + 30):
            await sink.done.wait()
        for task in tasks:
            task.cancel()
    return drivers, sink, time.monotonic() - wall0, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 measured cycles")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--poll", default="1s")
    args = parser.parse_args()
    args.cycles = args.cycles or (5 if args.quick else 20)
    period = parse_duration(args.poll)

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=serve, args=(args.units, theirs), daemon=True)
    server.start()
    try:
        port = ours.recv()
        drivers, sink, wall, cpu = asyncio.run(poll(port, args.units, args.cycles, args.poll))
        ours.send("stop")
        served = ours.recv()
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()

    points = sum(len(d.options.points) for d in drivers)
    planned = sum(len(d.plan) for d in drivers)
    cycles = sum(d.health()["cycles"] for d in drivers)
    late = sum(d.health()["late_cycles"] for d in drivers)
    lateness = [(t - round(t / period) * period) * 1000 for a in sink.arrivals.values()
                for t in a[1:]]
    intervals = [(b - a) * 1000 for arr in sink.arrivals.values()
                 for a, b in itertools.pairwise(arr[1:])]
    lateness.sort()
    print(f"{args.units} units x {points // args.units} points every {args.poll}, "
          f"{args.cycles} measured cycles, one TCP connection")
    print(f"requests per cycle: {planned} planned, "
          f"{served / max(cycles / args.units, 1):.1f} received by the server "
          f"(one request per point: {points})")
    print(f"readings: {sink.readings} in {wall:.1f} s; late cycles skipped: {late}")
    print(f"CPU of the polling process: {100 * cpu / wall:.1f}% of one core "
          f"({cpu * 1000 / max(cycles, 1):.2f} ms per device cycle)")
    print(f"batch arrival after the grid tick: p50 {lateness[len(lateness) // 2]:.1f} ms, "
          f"p99 {lateness[int(len(lateness) * 0.99)]:.1f} ms, max {lateness[-1]:.1f} ms")
    print(f"interval between a device's cycles: mean {statistics.fmean(intervals):.1f} ms, "
          f"stdev {statistics.pstdev(intervals):.2f} ms, "
          f"min {min(intervals):.1f} ms, max {max(intervals):.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({
            "bench": "modbus_poll", "quick": args.quick, "units": args.units,
            "points": points, "poll": args.poll, "cycles": args.cycles,
            "load": os.getloadavg(), "requests_planned": planned,
            "requests_per_cycle": served / max(cycles / args.units, 1),
            "requests_one_per_point": points, "late_cycles": late,
            "cpu_pct": 100 * cpu / wall,
            "arrival_p50_ms": lateness[len(lateness) // 2],
            "arrival_p99_ms": lateness[int(len(lateness) * 0.99)],
            "arrival_max_ms": lateness[-1],
            "interval_mean_ms": statistics.fmean(intervals),
            "interval_stdev_ms": statistics.pstdev(intervals)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
