"""``gatewayctl audit [--since WHEN]``: the commands audit log, read from its file
(``[commands] audit_log``), so it works whether or not the daemon runs.

Exit codes: 0 success (also when no record matches); 1 the log cannot be read;
2 invalid configuration or ``--since``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gatewayd.commands.audit import parse_time, read_audit
from gatewayd.config import load_config
from gatewayd.config.units import parse_duration
from gatewayd.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def parse_since(text: str, *, now: float) -> float:
    """``--since``: a duration back from now (``"2h"``) or an ISO 8601 time (UTC when
    no zone is given). Raises ValueError."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"invalid --since {text!r}; expected a duration such as '2h' or "
                         "an ISO 8601 time such as '2026-11-23T19:00:00Z'") from None


def _line(rec: dict[str, Any]) -> str:
    what = rec.get("action") or "-"
    if rec.get("device"):
        what += f" {rec['device']}/{rec.get('point')}"
    if "value" in rec:
        what += f"={json.dumps(rec['value'])}"
    if "ttl" in rec:
        what += f" ttl={rec['ttl']:g}s"
    reason = f" {rec['reason']}" + (f" ({rec['detail']})" if rec.get("detail") else "") \
        if rec.get("reason") else ""
    who = f" kid={rec['kid']}" if rec.get("kid") else ""
    if rec.get("sub"):
        who += f" sub={rec['sub']}"
    return (f"{rec.get('time')} {rec.get('status', '?'):<8} {what}{reason}  "
            f"jti={rec.get('jti')} uplink={rec.get('uplink')}{who}")


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    since = None
    if args.since:
        try:
            since = parse_since(args.since, now=time.time())
        except ValueError as err:
            print(f"gatewayctl: {err}", file=sys.stderr)
            return EXIT_USAGE
    path = config.commands.audit_log
    try:
        records = list(read_audit(path, since=since))
    except FileNotFoundError:
        records = []
    except OSError as err:
        print(f"gatewayctl: cannot read the audit log {path}: {err.strerror or err}",
              file=sys.stderr)
        return EXIT_FAILURE
    if args.limit:
        records = records[-args.limit:]
    if args.json:
        json.dump(records, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for rec in records:
            print(_line(rec))
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``audit`` command to gatewayctl's subparsers."""
    audit = sub.add_parser("audit", parents=[common],
                           help="show the commands audit log (every command and its outcome)")
    audit.add_argument("--since", metavar="WHEN",
                       help="only records since WHEN: a duration back ('2h') or an ISO time")
    audit.add_argument("--limit", type=int, default=0, metavar="N",
                       help="only the last N records")
    audit.set_defaults(func=cmd_audit)


def status_lines(st: dict[str, Any]) -> list[str]:
    """The commands line of ``gatewayctl status``."""
    cmds = st.get("commands")
    if not isinstance(cmds, dict):
        return []
    line = (f"commands: {cmds.get('trusted_keys', 0)} trusted key(s), "
            f"{cmds.get('received', 0)} received ({cmds.get('ok', 0)} ok, "
            f"{cmds.get('refused', 0)} refused, {cmds.get('failed', 0)} failed)")
    last = cmds.get("last")
    if isinstance(last, dict):
        line += f"; last {last.get('time')}: {last.get('action') or '-'} {last.get('status')}"
        if last.get("reason"):
            line += f" ({last['reason']})"
    lines = [line]
    lines += [f"  trusted key skipped: {p}" for p in cmds.get("key_problems") or []]
    if cmds.get("audit_errors"):
        lines.append(f"  ALARM: {cmds['audit_errors']} audit record(s) not written")
    return lines
