"""``gatewayctl modbus plan DEVICE``: the read requests one poll cycle of a device issues.

Works from the configuration alone (no daemon needed), so an operator can check a
point map before deploying it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gatewayd.config import load_config
from gatewayd.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    dev = config.devices.get(args.device)
    if dev is None:
        modbus = sorted(n for n, d in config.devices.items() if d.driver == "modbus")
        print(f"gatewayctl: no device {args.device!r} in the configuration; Modbus devices: "
              f"{', '.join(modbus) or 'none'}", file=sys.stderr)
        return EXIT_FAILURE
    if dev.driver != "modbus":
        print(f"gatewayctl: device {args.device!r} uses driver {dev.driver!r}, not modbus",
              file=sys.stderr)
        return EXIT_FAILURE
    from gatewayd.drivers.modbus.plan import build_plan, format_plan

    if args.json:
        plan: list[dict[str, Any]] = [
            {"unit": r.unit, "function": r.function, "space": r.space, "start": r.start,
             "count": r.count, "poll_s": r.poll, "points": list(r.points)}
            for r in build_plan(dev.options)]
        json.dump({"device": dev.name, "url": dev.options.url, "requests": plan}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_plan(dev.options))
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``modbus`` command group to gatewayctl's subparsers."""
    mb = sub.add_parser("modbus", help="Modbus devices")
    msub = mb.add_subparsers(dest="modbus_command", required=True, metavar="COMMAND")
    plan = msub.add_parser("plan", parents=[common],
                           help="print the read requests one poll cycle of DEVICE issues")
    plan.add_argument("device", metavar="DEVICE")
    plan.set_defaults(func=cmd_plan)
