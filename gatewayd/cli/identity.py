"""``gatewayctl identity init|show|install-cert``: the gateway's key, CSR, certificate
and SSH key. Works on the files named by ``[identity]`` (no daemon needed).

Exit codes: 0 success; 1 the identity is incomplete or a file does not fit
(the message says which); 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gatewayd.config import Config, load_config
from gatewayd.errors import ConfigError
from gatewayd.identity import (
    IdentityError,
    describe_identity,
    init_identity,
    install_certificate,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _config(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _fail(err: Exception) -> int:
    text = str(err) if isinstance(err, IdentityError) else \
        f"{getattr(err, 'filename', '')}: {getattr(err, 'strerror', None) or err}"
    print(f"gatewayctl: {text}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_init(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    try:
        report = init_identity(config.identity, config.gateway.id)
    except (IdentityError, OSError) as err:
        return _fail(err)
    if args.json:
        _print_json({**report.as_dict(), "csr_file": str(config.identity.csr_file)})
        return EXIT_OK
    for path in report.created:
        print(f"created {path}")
    for path in report.kept:
        print(f"kept    {path}")
    for note in report.fixed:
        print(f"fixed   {note}")
    print(f"send the CSR {config.identity.csr_file} to your CA, then run "
          "'gatewayctl identity install-cert FILE' with the certificate it returns")
    return EXIT_OK


def _show_text(info: dict[str, Any], warning_days: int) -> str:
    key, csr, cert, ssh = info["key"], info["csr"], info["certificate"], info["ssh"]
    lines = [f"gateway      {info['gateway']} ({info['urn']})",
             f"key          {key['file']}"
             + (f"  {key['algorithm']}  mode {key['mode']}" if "sha256" in key else "  missing"),
             ]
    if "sha256" in key:
        lines.append(f"             {key['sha256']}")
    lines.append(f"csr          {csr['file']}  "
                 + (f"subject {csr['subject']}" if csr.get("subject") else "missing"))
    lines.append(f"certificate  {cert['file']}" + ("" if "subject" in cert else "  missing"))
    if "subject" in cert:
        days = cert["days_left"]
        note = ("  EXPIRED" if days <= 0 else
                f"  WARNING: expires within {warning_days} days" if days <= warning_days else "")
        lines += [f"  subject    {cert['subject']}",
                  f"  issuer     {cert['issuer']}",
                  f"  serial     {cert['serial']}",
                  f"  valid      {cert['not_before']} to {cert['not_after']} "
                  f"({days:.1f} days left){note}",
                  f"  sha256     {cert['sha256']}",
                  f"  matches the key: {'yes' if cert.get('matches_key') else 'NO'}"]
        if cert.get("san"):
            lines.insert(-3, f"  san        {', '.join(cert['san'])}")
    lines.append(f"ssh key      {ssh['file']}"
                 + (f"  {ssh['algorithm']}  {ssh['sha256']}" if "sha256" in ssh else "  missing"))
    if "public" in ssh:
        lines.append(f"             {ssh['public']}  ({ssh['public_file']})")
    if info["problems"]:
        lines.append("problems:")
        lines += [f"  - {p}" for p in info["problems"]]
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    info = describe_identity(config.identity, config.gateway.id)
    if args.json:
        _print_json(info)
    else:
        print(_show_text(info, config.identity.expiry_warning_days))
    return EXIT_FAILURE if info["problems"] else EXIT_OK


def cmd_install_cert(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    try:
        info = install_certificate(config.identity, Path(args.file))
    except (IdentityError, OSError) as err:
        return _fail(err)
    if args.json:
        _print_json({"installed": str(config.identity.cert_file), **info})
    else:
        print(f"installed {config.identity.cert_file}: subject {info['subject']}, issuer "
              f"{info['issuer']}, expires {info['not_after']} ({info['days_left']:.1f} days)")
        print("uplinks pick it up at their next connect; 'gatewayctl reload' reconnects them now")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``identity`` command group to gatewayctl's subparsers."""
    ident = sub.add_parser("identity", help="the gateway's key, certificate and SSH key")
    isub = ident.add_subparsers(dest="identity_command", required=True, metavar="COMMAND")
    isub.add_parser("init", parents=[common],
                    help="make the key (0600), the CSR and the SSH key where missing"
                    ).set_defaults(func=cmd_init)
    isub.add_parser("show", parents=[common],
                    help="print fingerprints, certificate subject and expiry"
                    ).set_defaults(func=cmd_show)
    install = isub.add_parser("install-cert", parents=[common],
                              help="install the certificate FILE after checking it")
    install.add_argument("file", metavar="FILE", help="PEM: the certificate, then any "
                         "intermediate CA certificates")
    install.set_defaults(func=cmd_install_cert)


def status_lines(st: dict[str, Any]) -> list[str]:
    """The certificate line of ``gatewayctl status``."""
    ident = st.get("identity")
    if not isinstance(ident, dict):
        return []
    if not ident.get("present"):
        return [f"certificate: none ({ident.get('error')})"]
    days = ident.get("days_left", 0.0)
    note = (", EXPIRED" if days <= 0 else
            f", WARNING: expires within {ident.get('warning_days')} days"
            if ident.get("expiry_warning") else "")
    return [f"certificate: {ident.get('subject')}, expires {ident.get('not_after')} "
            f"({days:.1f} days){note}"]
