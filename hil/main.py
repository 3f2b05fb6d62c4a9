"""``hil/run --bench virtual|FILE.toml [--quick] [--json PATH]``: one set of acceptance
checks against a bench, through the real daemon. Exit status 0 when no check failed,
1 when one did, 2 when the bench could not be set up (bad bench file, missing peer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from gatewayd.config import load_config
from gatewayd.errors import ConfigError
from hil.bench import Bench, BenchError, RunPaths, gatewayd_config, load_bench
from hil.checks import (
    Run,
    check_readings,
    check_replug,
    check_stop,
    check_tunnel,
    check_uplink,
    check_upstream,
    check_write,
    timed,
)
from hil.report import FAIL, PASS, CheckResult, Report
from hil.upstream import Operator, UpstreamMonitor
from tests.support.daemon import DaemonProcess, gatewayctl


@contextlib.asynccontextmanager
async def echo_service() -> AsyncIterator[int]:
    """A TCP echo service on a free loopback port: what the tunnel's forward reaches."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, family=socket.AF_INET)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def run_checks(bench: Bench, work: Path, *, interactive: bool) -> Report:
    """Start the daemon for ``bench`` and run every check; the report says what passed."""
    report = Report(bench.name, work_dir=str(work))
    async with contextlib.AsyncExitStack() as stack:
        echo_port = None
        if bench.tunnel is not None and bench.tunnel.local is None:
            echo_port = await stack.enter_async_context(echo_service())
        paths = RunPaths(state=work / "gw" / "state", trusted_keys=work / "trusted",
                         echo_port=echo_port)
        operator = Operator()
        operator.install(paths.trusted_keys)
        daemon = DaemonProcess(work / "gw", gatewayd_config(bench, paths),
                               extra_env=dict(bench.env))
        stack.callback(daemon.close)

        started = time.monotonic()
        try:
            config = load_config(daemon.config_path, env={})
        except ConfigError as err:
            report.add(CheckResult("config", FAIL, {}, f"the gatewayd config made from the "
                                                       f"bench is invalid: {err}"))
            return report
        if bench.identity is None:
            init = await asyncio.to_thread(gatewayctl, "identity", "init", "--config",
                                           str(daemon.config_path))
            if init.returncode != 0:
                report.add(CheckResult("config", FAIL, {}, f"gatewayctl identity init: "
                                                           f"{init.stderr.strip()}"))
                return report
        report.add(CheckResult("config", PASS, {"devices": len(config.devices),
                                                "file": str(daemon.config_path)},
                               seconds=round(time.monotonic() - started, 2)))

        monitor = UpstreamMonitor(bench.broker)
        stack.callback(monitor.stop)
        started = time.monotonic()
        try:
            await monitor.start(bench.timeout)
            daemon.start()
            ready = await asyncio.to_thread(daemon.wait_ready, bench.timeout)
        except (TimeoutError, AssertionError) as err:
            report.add(CheckResult("start", FAIL, {}, f"{err}".strip()[:2000],
                                   seconds=round(time.monotonic() - started, 2)))
            return report
        run = Run(bench, daemon, monitor, operator, paths, ready_ns=time.time_ns(),
                  interactive=interactive)
        report.add(CheckResult("start", PASS, {"ready_s": round(time.monotonic() - started, 2),
                                               "pid": daemon.proc.pid if daemon.proc else None,
                                               "notify_index": ready},
                               seconds=round(time.monotonic() - started, 2)))

        steps: list[tuple[str, Coroutine[Any, Any, CheckResult | list[CheckResult]]]] = [
            ("uplink", check_uplink(run)), ("readings", check_readings(run))]
        steps += [(f"write:{w.device}/{w.point}", check_write(run, w)) for w in bench.writes]
        steps += [(f"replug:{r.what}", check_replug(run, r)) for r in bench.replugs]
        if bench.tunnel is not None:
            steps.append(("tunnel", check_tunnel(run)))
        steps += [("upstream", check_upstream(run)), ("stop", check_stop(run))]
        for i, (name, step) in enumerate(steps):
            results = await timed(name, step)
            for result in results:
                report.add(result)
                print(f"  {result.name}: {result.result}", file=sys.stderr, flush=True)
            if name == "uplink" and results[0].result == FAIL:
                for _, later in steps[i + 1:]:
                    later.close()  # nothing reaches the broker: the rest cannot pass
                break
        if daemon.proc is not None and daemon.proc.poll() is None:
            report.add(CheckResult("stop", FAIL, {}, "gatewayd was still running at the end"))
    return report


async def run_bench(args: argparse.Namespace, work: Path) -> Report:
    if args.bench == "virtual":
        from hil.virtual import virtual_bench, virtual_work_dir  # the test peers: virtual only

        async with virtual_bench(virtual_work_dir(work), quick=args.quick) as bench:
            return await run_checks(bench, work, interactive=False)
    bench = load_bench(Path(args.bench))
    if args.quick:
        bench = dataclasses.replace(bench, readings=min(bench.readings, 2))
    return await run_checks(bench, work, interactive=sys.stdin.isatty())


def check_only(bench_file: str) -> int:
    """``--check``: the bench file and the gatewayd config a run would use are valid."""
    if bench_file == "virtual":
        print("hil/run: --check takes a bench file", file=sys.stderr)
        return 2
    try:
        bench = load_bench(Path(bench_file))
    except BenchError as err:
        print(f"hil/run: invalid bench file:\n{err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hil-check-") as tmp:
        paths = RunPaths(state=Path(tmp) / "state", trusted_keys=Path(tmp) / "trusted",
                         echo_port=1)
        config = Path(tmp) / "gatewayd.toml"
        config.write_text(gatewayd_config(bench, paths))
        try:
            load_config(config, env={})
        except ConfigError as err:
            print(f"hil/run: the gatewayd config made from {bench_file} is invalid:\n{err}",
                  file=sys.stderr)
            return 2
    print(f"{bench_file}: bench {bench.name!r}, gateway {bench.gateway_id}, "
          f"{len(bench.devices)} devices ({sum(len(d.expect) for d in bench.devices)} "
          f"expectations), {len(bench.writes)} writes, {len(bench.replugs)} replugs, "
          f"tunnel {'yes' if bench.tunnel else 'no'}: valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True,
                        help='"virtual", or a bench file (see hil/README.md)')
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="judge values after 2 readings per point, shorter bounds")
    parser.add_argument("--check", action="store_true",
                        help="only check the bench file and the gatewayd config made from it")
    parser.add_argument("--work", type=Path,
                        help="keep the daemon's files, logs and peers here (default: a "
                             "temporary folder, removed when every check passed)")
    args = parser.parse_args(argv)
    if args.check:
        return check_only(args.bench)
    work = args.work or Path(tempfile.mkdtemp(prefix="hil-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(run_bench(args, work))
    except BenchError as err:
        print(f"hil/run: invalid bench file:\n{err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, TimeoutError, AssertionError) as err:  # a peer failed
        print(f"hil/run: the bench could not be set up: {err}\n(files in {work})",
              file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        report.write_json(args.json)
    if report.passed and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    elif not report.passed:
        print(f"daemon log and files: {work}", file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
