"""``gatewayd``: the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gatewayd import __version__
from gatewayd.config import DEFAULT_PATH, load_config
from gatewayd.config.schema import LOG_LEVELS
from gatewayd.errors import ConfigError, GatewayError
from gatewayd.logs import setup_logging

log = logging.getLogger("gatewayd")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatewayd", description="Edge gateway daemon.")
    p.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground (systemd runs this)")
    run.add_argument("--config", type=Path, default=DEFAULT_PATH,
                     help=f"main config file (default {DEFAULT_PATH}); "
                          "drop-ins are read from conf.d/ beside it")
    run.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                     help="override [logging] level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level or "info")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            log.error("invalid configuration: %s", problem)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level)

    from gatewayd.daemon import Daemon  # imported late: the CLI stays fast for --help

    try:
        asyncio.run(Daemon(args.config, config).run())
    except GatewayError as err:
        log.error("fatal: %s", err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
