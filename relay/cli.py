"""The ``relay`` command: serve, user add, flood, --version."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import signal
import sys
from collections.abc import Sequence

import trio

from . import __version__
from .app import open_services, run
from .config import Config, ConfigError, load_config
from .errors import Refused
from .obs import configure_logging, get_logger


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m relay``."""
    rest = sys.argv[1:] if argv is None else list(argv)
    if rest[:1] == ["flood"]:  # needs no config and no JWT_SECRET; parses its own flags
        from .flood._cli import main as flood_main  # only here: `relay serve` never loads it

        return flood_main(rest[1:], argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(args.config or os.environ.get("RELAY_CONFIG"), os.environ)
    except ConfigError as exc:
        print(f"relay: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    if args.command == "serve":
        return _serve(config, dev=args.dev)
    if args.command == "user":
        return _user_add(config, args.name, args.password_stdin)
    parser.print_help()  # pragma: no cover
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the relay (HTTP API and WebSocket)")
    serve.add_argument("--config", help="path to relay.toml (default: $RELAY_CONFIG)")
    serve.add_argument(
        "--dev", action="store_true", help="allow running without JWT_SECRET (ephemeral secret)"
    )
    user = sub.add_parser("user", help="manage accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--config", help="path to relay.toml (default: $RELAY_CONFIG)")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    sub.add_parser("flood", help="load-test a relay you operate (loopback only)")  # see main
    return parser


def _serve(config: Config, *, dev: bool) -> int:
    log = get_logger("relay")
    if not config.auth.jwt_secret:
        if not dev:
            print(
                "relay: JWT_SECRET is not set: set it (at least 32 bytes) or run "
                "`relay serve --dev` for an ephemeral one",
                file=sys.stderr,
            )
            return 2
        config = config.replace(auth__jwt_secret=secrets.token_urlsafe(48))
        log.warning("relay.dev_secret", detail="ephemeral JWT secret; tokens die with the process")
    trio.run(_serve_until_signal, config)
    return 0


async def _serve_until_signal(config: Config) -> None:
    stop = trio.Event()
    log = get_logger("relay")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info("relay.shutdown", signal=signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(watch)
            await run(config, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()


def _user_add(config: Config, name: str, password_stdin: bool) -> int:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            print("relay: passwords do not match", file=sys.stderr)
            return 1
    if not config.auth.jwt_secret:
        # Creating a user signs nothing; the services just need some secret.
        config = config.replace(auth__jwt_secret=secrets.token_urlsafe(48))
    config = config.replace(auth__open_registration=True)
    return trio.run(_add, config, name, password)


async def _add(config: Config, name: str, password: str) -> int:
    async with open_services(config) as services:
        try:
            user = await services.auth.register(name, password)
        except Refused as exc:
            print(f"relay: {exc.message}", file=sys.stderr)
            return 1
    print(f"created user {user.username} ({user.id})")
    return 0
