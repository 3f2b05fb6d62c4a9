"""``gatewayctl clients add|token|sign|list|remove``: the local clients file.

Works on the clients file the configuration names (``[local] clients_file``,
default ``clients.toml`` beside the main config file), or ``--clients-file``.
No daemon is needed; ``gatewayctl reload`` (or ``systemctl reload gatewayd``)
makes a running daemon read the changed file. ``add`` prints the new key once;
nothing else ever shows a key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gatewayd.config import load_config
from gatewayd.config.units import format_duration, parse_duration
from gatewayd.errors import ConfigError
from gatewayd.local import acl
from gatewayd.local.clients import (
    DEFAULT_PUBLISH,
    DEFAULT_SUBSCRIBE,
    ClientRecord,
    encode_key,
    load_clients,
    make_record,
    name_problem,
    new_key,
    save_clients,
    utc_now_text,
)
from gatewayd.local.config import LocalConfig
from gatewayd.local.tokens import mint_token, sign_message

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Refused(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        self.code = code
        super().__init__(message)


def _local(args: argparse.Namespace) -> tuple[Path, LocalConfig | None, str | None]:
    """The clients file, the local config (None with --clients-file) and the gateway id."""
    try:
        config = load_config(args.config)
    except ConfigError as err:
        if args.clients_file:
            return Path(args.clients_file), None, None
        problems = "\n".join(str(p) for p in err.problems)
        raise _Refused(f"{problems}\nconfiguration is invalid; fix it or pass --clients-file",
                       EXIT_USAGE) from None
    path = Path(args.clients_file) if args.clients_file else (
        config.local.clients_file if config.local else args.config.parent / "clients.toml")
    return path, config.local, config.gateway.id


def _load(path: Path, *, missing_ok: bool = False) -> dict[str, ClientRecord]:
    try:
        return load_clients(path, missing_ok=missing_ok)
    except ConfigError as err:
        raise _Refused("\n".join(str(p) for p in err.problems)) from None


def _existing(clients: dict[str, ClientRecord], name: str, path: Path) -> ClientRecord:
    rec = clients.get(name)
    if rec is None:
        raise _Refused(f"no client {name!r} in {path}; clients: "
                       f"{', '.join(sorted(clients)) or 'none'}")
    return rec


def _filters(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if values is None:
        return default
    for f in values:
        why = acl.filter_problem(f.replace(acl.CLIENT_PLACEHOLDER, "x"))
        if why:
            raise _Refused(f"invalid topic filter {f!r}: {why}", EXIT_USAGE)
    return tuple(values)


def cmd_add(args: argparse.Namespace) -> int:
    path, _local_cfg, _gw = _local(args)
    why = name_problem(args.name)
    if why:
        raise _Refused(why, EXIT_USAGE)
    clients = _load(path, missing_ok=True)
    if args.name in clients:
        raise _Refused(f"client {args.name!r} exists in {path}; remove it first to make a "
                       "new key")
    key = new_key()
    clients[args.name] = make_record(
        args.name, key=key, publish=_filters(args.publish, DEFAULT_PUBLISH),
        subscribe=_filters(args.subscribe, DEFAULT_SUBSCRIBE), signed=args.signed,
        created=utc_now_text())
    save_clients(path, clients)
    if args.json:
        _print_json({"client": args.name, "key": encode_key(key), "file": str(path)})
    else:
        print(encode_key(key))
        print(f"client {args.name} added to {path}; the key above is shown only now. "
              "Run 'gatewayctl reload' to apply.", file=sys.stderr)
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    path, local_cfg, gateway_id = _local(args)
    rec = _existing(_load(path), args.name, path)
    max_age = local_cfg.token_max_age if local_cfg else 3600.0
    ttl = parse_duration(args.ttl) if args.ttl else max_age
    if ttl > max_age:
        raise _Refused(f"--ttl {args.ttl} is longer than token_max_age "
                       f"({format_duration(max_age)}): the gateway would refuse the token",
                       EXIT_USAGE)
    print(mint_token(rec.name, rec.key, ttl=ttl, audience=gateway_id if args.audience else None))
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    path, _local_cfg, _gw = _local(args)
    rec = _existing(_load(path), args.name, path)
    body = sys.stdin.read() if args.payload == "-" else args.payload
    print(sign_message(args.topic, body, rec.key))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    path, _local_cfg, _gw = _local(args)
    clients = _load(path, missing_ok=True)
    rows: list[dict[str, Any]] = [{"client": r.name, "publish": list(r.publish_template),
             "subscribe": list(r.subscribe_template), "signed": r.signed, "created": r.created}
            for r in sorted(clients.values(), key=lambda r: r.name)]
    if args.json:
        _print_json({"file": str(path), "clients": rows})
        return EXIT_OK
    if not rows:
        print(f"no clients in {path}")
    for row in rows:
        print(f"{row['client']:<24} publish {','.join(row['publish']) or '-'}  "
              f"subscribe {','.join(row['subscribe']) or '-'}"
              + ("  signed" if row["signed"] else "")
              + (f"  created {row['created']}" if row["created"] else ""))
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    path, _local_cfg, _gw = _local(args)
    clients = _load(path)
    _existing(clients, args.name, path)
    del clients[args.name]
    save_clients(path, clients)
    print(f"client {args.name} removed from {path}. Run 'gatewayctl reload' to apply.",
          file=sys.stderr)
    return EXIT_OK


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
            return code
        except _Refused as err:
            print(f"gatewayctl: {err}", file=sys.stderr)
            return err.code
        except ValueError as err:  # a bad --ttl
            print(f"gatewayctl: {err}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:
            print(f"gatewayctl: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
            return EXIT_FAILURE
    return wrapped


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``clients`` command group to gatewayctl's subparsers."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--clients-file", default=None,
                     help="the clients file (default: [local] clients_file of the config)")
    cl = sub.add_parser("clients", help="local MQTT/CoAP clients and their keys")
    csub = cl.add_subparsers(dest="clients_command", required=True, metavar="COMMAND")

    add = csub.add_parser("add", parents=[common, own],
                          help="add client NAME with a new key (printed once)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--publish", action="append", metavar="FILTER",
                     help="topic filter NAME may publish to (repeatable; default "
                          f"{' '.join(DEFAULT_PUBLISH)}; {{client}} = NAME)")
    add.add_argument("--subscribe", action="append", metavar="FILTER",
                     help="topic filter NAME may subscribe to (repeatable; default none)")
    add.add_argument("--signed", action="store_true",
                     help="require every message of NAME to be a signed JWS")
    add.set_defaults(func=_run(cmd_add))

    tok = csub.add_parser("token", parents=[common, own],
                          help="print a password token for NAME (MQTT password, CoAP token=)")
    tok.add_argument("name", metavar="NAME")
    tok.add_argument("--ttl", default=None,
                     help="validity, e.g. 10m (default and maximum: token_max_age)")
    tok.add_argument("--audience", action="store_true",
                     help="bind the token to this gateway's id (aud claim)")
    tok.set_defaults(func=_run(cmd_token))

    sign = csub.add_parser("sign", parents=[common, own],
                           help="print PAYLOAD signed by NAME for TOPIC (signed messages)")
    sign.add_argument("name", metavar="NAME")
    sign.add_argument("--topic", required=True)
    sign.add_argument("--payload", required=True, help="the message; - reads standard input")
    sign.set_defaults(func=_run(cmd_sign))

    lst = csub.add_parser("list", parents=[common, own], help="list clients (never keys)")
    lst.set_defaults(func=_run(cmd_list))

    rm = csub.add_parser("remove", parents=[common, own], help="remove client NAME")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=_run(cmd_remove))
