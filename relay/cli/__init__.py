"""The ``relay`` command: serve, user (add, list, delete, passwd, unlock), migrate, flood.

Every command fails with one line on standard error — a bad config value, a
port in use, a missing database, end of input, Ctrl-C — never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError, load_config
from ._parsers import add_migrate_parser, add_user_parsers

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m relay``."""
    rest = sys.argv[1:] if argv is None else list(argv)
    if rest[:1] == ["flood"]:  # needs no config and no JWT_SECRET; parses its own flags
        from ..flood._cli import main as flood_main  # only here: `relay serve` never loads it

        return flood_main(rest[1:], argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        config = load_config(args.config or os.environ.get("RELAY_CONFIG"), os.environ)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Each command loads what it needs only now (the servers, the drivers).
    if args.command == "serve":
        from ._serve import serve

        return serve(config, dev=args.dev, workers=args.workers, config_path=args.config)
    if args.command == "migrate":
        from ._migrate import run_migrate

        return run_migrate(config, args)
    from ._users import run_user_command

    return run_user_command(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve_cmd = sub.add_parser("serve", help="run the relay (HTTP API and WebSocket)")
    _config_option(serve_cmd)
    serve_cmd.add_argument(
        "--dev", action="store_true", help="allow running without JWT_SECRET (ephemeral secret)"
    )
    serve_cmd.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes on the same ports (default: [server] workers)",
    )
    add_user_parsers(sub, _config_option)
    add_migrate_parser(sub, _config_option)
    sub.add_parser("flood", help="load-test a relay you operate (loopback only)")  # see main
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="path to relay.toml (default: $RELAY_CONFIG)")
