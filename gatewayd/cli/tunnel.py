"""``gatewayctl tunnel open [--ttl D] | close | status``: the remote-access tunnel.

Exit codes as for every gatewayctl command: 0 done; 1 the daemon refused (no
``[tunnel]`` table, a TTL above ``max_ttl``, close in ``always`` mode);
2 usage; 3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatewayd.config.units import parse_duration
from gatewayd.control import request

SocketPath = Callable[[argparse.Namespace], Path]
PrintJson = Callable[[Any], None]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status_line(health: dict[str, Any]) -> str:
    """One line for ``gatewayctl status``."""
    line = (f"tunnel: {health.get('state')} since {_when(health.get('since'))} "
            f"({_span(health.get('state_age_s'))}), {health.get('mode')}, "
            f"{health.get('bastion')}")
    if health.get("open_remaining_s") is not None:
        line += f", closes in {_span(health['open_remaining_s'])}"
    if health.get("last_error"):
        line += (f", last error {_when(health.get('last_error_at'))}: "
                 f"{health['last_error']}")
    return line


def describe(health: dict[str, Any]) -> str:
    """The several lines of ``gatewayctl tunnel status``."""
    lines = [
        f"state:      {health.get('state')} since {_when(health.get('since'))} "
        f"({_span(health.get('state_age_s'))})",
        f"mode:       {health.get('mode')}, transport {health.get('transport')}",
        f"bastion:    {health.get('bastion')}",
        "forwards:   " + ", ".join(health.get("forwards") or []),
    ]
    if health.get("open_until") is not None:
        lines.append(f"open until: {_when(health['open_until'])} "
                     f"({_span(health.get('open_remaining_s'))} left)")
    if health.get("pid") is not None:
        lines.append(f"ssh pid:    {health['pid']}")
    lines.append(f"counters:   ssh starts {health.get('starts', 0)}, up {health.get('ups', 0)}, "
                 f"failures {health.get('failures', 0)}, "
                 f"connections {health.get('connections', 0)}")
    if health.get("next_retry_in_s") is not None:
        lines.append(f"next try:   in {health['next_retry_in_s']:.1f}s")
    if health.get("last_error"):
        lines.append(f"last error: {_when(health.get('last_error_at'))} "
                     f"[{health.get('last_error_reason')}] {health['last_error']}")
    if health.get("last_close"):
        lines.append(f"last close: {'TTL ended' if health['last_close'] == 'ttl' else 'request'}")
    return "\n".join(lines)


def _ttl(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("expected a duration above 0s")
    return seconds


def register(sub: Any, common: argparse.ArgumentParser, *, socket_path: SocketPath,
             print_json: PrintJson) -> None:
    """Add ``tunnel open|close|status`` to gatewayctl's subcommands ``sub``."""

    def cmd_open(args: argparse.Namespace) -> int:
        extra = {} if args.ttl is None else {"ttl": args.ttl}
        health = request(socket_path(args), "tunnel-open", **extra)["tunnel"]
        if args.json:
            print_json(health)
        elif health.get("mode") == "always":
            print("tunnel is always on (mode = \"always\")")
        else:
            print(f"tunnel open until {_when(health.get('open_until'))} "
                  f"(for {_span(health.get('open_remaining_s'))}); "
                  f"state {health.get('state')}")
        return 0

    def cmd_close(args: argparse.Namespace) -> int:
        health = request(socket_path(args), "tunnel-close")["tunnel"]
        if args.json:
            print_json(health)
        else:
            print(f"tunnel closed; state {health.get('state')}")
        return 0

    def cmd_status(args: argparse.Namespace) -> int:
        health = request(socket_path(args), "tunnel-status")["tunnel"]
        if args.json:
            print_json(health)
        else:
            sys.stdout.write(describe(health) + "\n")
        return 0

    tun = sub.add_parser("tunnel", help="the remote-access tunnel")
    tsub = tun.add_subparsers(dest="tunnel_command", required=True, metavar="COMMAND")
    p_open = tsub.add_parser("open", parents=[common],
                             help="open the on-demand tunnel for a while")
    p_open.add_argument("--ttl", type=_ttl, default=None,
                        help="how long, e.g. 30m or 2h (default: [tunnel] default_ttl)")
    p_open.set_defaults(func=cmd_open)
    tsub.add_parser("close", parents=[common], help="close the on-demand tunnel now"
                    ).set_defaults(func=cmd_close)
    tsub.add_parser("status", parents=[common], help="the tunnel's state, last error and "
                    "counters").set_defaults(func=cmd_status)
