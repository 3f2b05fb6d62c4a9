"""``gatewayctl``: the operator's tool.

Exit codes: 0 success; 1 failure (the daemon answered an error, or a request
failed); 2 invalid configuration or usage; 3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gatewayd import __version__
from gatewayd.cli import audit as audit_cli
from gatewayd.cli import clients as clients_cli
from gatewayd.cli import identity as identity_cli
from gatewayd.cli import modbus
from gatewayd.cli import tunnel as tunnel_cli
from gatewayd.config import DEFAULT_PATH, load_config
from gatewayd.control import DaemonNotRunning, request
from gatewayd.drivers.ble import cli as ble_cli
from gatewayd.errors import ConfigError, ControlError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def _socket_path(args: argparse.Namespace) -> Path:
    """--socket, else the config's control.socket, else the runtime directory's."""
    if args.socket:
        return Path(args.socket)
    try:
        return load_config(args.config).control.socket
    except ConfigError:
        runtime = os.environ.get("RUNTIME_DIRECTORY", "/run/gatewayd").split(":")[0]
        return Path(runtime) / "control.sock"


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        if args.json:
            _print_json({"valid": False, "problems": [
                {"file": p.file, "path": p.path, "message": p.message} for p in err.problems]})
        else:
            for problem in err.problems:
                print(problem, file=sys.stderr)
            print(f"{len(err.problems)} problem(s); configuration is invalid", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json({"valid": True, "files": list(config.files),
                     "devices": sorted(config.devices), "uplinks": sorted(config.uplinks)})
    else:
        print(f"configuration is valid: {len(config.devices)} devices, "
              f"{len(config.uplinks)} uplinks ({', '.join(config.files)})")
    return EXIT_OK


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _format_status(st: dict[str, Any]) -> str:
    lines = [
        f"gatewayd {st['version']} (gateway {st['gateway']}), pid {st['pid']}, "
        f"up {_age(st['uptime_s'])}",
        f"config: {st['config']}",
    ]
    comps: dict[str, Any] = st["components"]
    lines.append("devices:")
    for name, c in comps.items():
        if name.startswith("device:"):
            h = c.get("health", {})
            lines.append(f"  {name[7:]:<20} {c['state']:<9} readings {h.get('readings', 0):<9}"
                         f" last {_age(h.get('last_reading_age_s'))} ago"
                         f"  errors {c['errors']}"
                         + (f"  last error: {c['last_error']}" if c["last_error"] else ""))
    buf = st.get("buffer", {})
    backlogs = buf.get("uplinks", {})
    lines.append("uplinks:")
    for name, c in comps.items():
        if name.startswith("uplink:"):
            h = c.get("health", {})
            b = backlogs.get(name[7:], {})
            err = h.get("last_error") or c["last_error"]
            lines.append(f"  {name[7:]:<20} {h.get('state', c['state']):<10} "
                         f"backlog {b.get('backlog_rows', '-')}  "
                         f"acked {h.get('acked_per_s', 0)}/s  "
                         f"last ack {_age(h.get('last_ack_age_s'))} ago"
                         + (f"  last error: {err}" if err else ""))
    if buf:
        used = buf.get("used_bytes", 0)
        cap = buf.get("effective_max_size") or buf.get("max_size", 1) or 1
        lines.append(f"buffer: {buf.get('rows', 0)} rows, {used / 2**20:.1f} MiB of "
                     f"{cap / 2**20:.0f} MiB ({100 * used / cap:.0f}%), "
                     f"dropped {buf.get('drops_total', 0)}"
                     + (f", ALARM: {buf['alarm']}" if buf.get("alarm") else "")
                     + (f", recovered from a corrupt file (moved to {buf['recovered_corrupt']})"
                        if buf.get("recovered_corrupt") else ""))
    lines += identity_cli.status_lines(st) + audit_cli.status_lines(st)
    if "tunnel" in comps:
        lines.append(tunnel_cli.status_line(comps["tunnel"].get("health", {})))
    others = [n for n in comps if not n.startswith(("device:", "uplink:")) and n != "tunnel"]
    for name in others:
        c = comps[name]
        if c["state"] != "running" or c["last_error"]:
            lines.append(f"{name}: {c['state']}" + (f", last error: {c['last_error']}"
                                                     if c["last_error"] else ""))
    if st.get("last_reload") and not st["last_reload"].get("ok"):
        lines.append("last reload refused: " + "; ".join(st["last_reload"].get("problems", [])))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    st = request(_socket_path(args), "status")
    st.pop("ok", None)
    if args.json:
        _print_json(st)
    else:
        print(_format_status(st))
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    sys.stdout.write(request(_socket_path(args), "metrics")["text"])
    return EXIT_OK


def cmd_buffer_stats(args: argparse.Namespace) -> int:
    stats = request(_socket_path(args), "buffer-stats")["buffer"]
    if args.json:
        _print_json(stats)
    else:
        for key in sorted(stats):
            print(f"{key}: {json.dumps(stats[key], default=str)}")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    request(_socket_path(args), "reload")
    print("reload requested")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_PATH,
                        help=f"main config file (default {DEFAULT_PATH})")
    common.add_argument("--socket", default=None,
                        help="control socket (default: from the config, else "
                             "/run/gatewayd/control.sock)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = argparse.ArgumentParser(prog="gatewayctl", description="Operate a gatewayd gateway.")
    p.add_argument("--version", action="version", version=f"gatewayctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("check-config", parents=[common],
                   help="validate the configuration; list every problem").set_defaults(
        func=cmd_check_config)
    sub.add_parser("status", parents=[common], help="show the running daemon's state").set_defaults(
        func=cmd_status)
    sub.add_parser("metrics", parents=[common], help="print Prometheus metrics").set_defaults(
        func=cmd_metrics)
    sub.add_parser("reload", parents=[common], help="ask the daemon to reload its configuration"
                   ).set_defaults(func=cmd_reload)
    buf = sub.add_parser("buffer", help="the durable buffer")
    bsub = buf.add_subparsers(dest="buffer_command", required=True, metavar="COMMAND")
    bsub.add_parser("stats", parents=[common], help="buffer statistics").set_defaults(
        func=cmd_buffer_stats)
    modbus.register(sub, common)
    identity_cli.register(sub, common)
    audit_cli.register(sub, common)
    clients_cli.register(sub, common)
    tunnel_cli.register(sub, common, socket_path=_socket_path, print_json=_print_json)
    ble_cli.register(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except DaemonNotRunning as err:
        print(f"gatewayctl: {err}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ControlError as err:
        print(f"gatewayctl: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
