"""The command line's shape: every ``relay`` subcommand and its options.

Kept apart from the commands themselves, which import the servers and the
store drivers: ``relay --version``, ``relay --help`` and a usage error
answer without loading any of that.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

ConfigOption = Callable[[argparse.ArgumentParser], None]


def add_user_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: ConfigOption,
) -> None:
    user = sub.add_parser("user", help="manage accounts in the configured store")
    commands = user.add_subparsers(dest="user_command", required=True)
    for name, text in (
        ("add", "create an account"),
        ("list", "list every account"),
        ("delete", "delete an account with its devices, keys and queued messages"),
        ("passwd", "set an account's password (its sessions end)"),
        ("unlock", "lift the login lockouts of a username (on the running relay)"),
    ):
        command = commands.add_parser(name, help=text)
        config_option(command)
        if name != "list":
            command.add_argument("name")
        if name in ("add", "passwd"):
            command.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from standard input",
            )
        if name == "delete":
            command.add_argument("--yes", action="store_true", help="do not ask to confirm")


def add_migrate_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: ConfigOption,
) -> None:
    command = sub.add_parser(
        "migrate", help="migrate the configured store's schema (to the latest, or up or down to N)"
    )
    config_option(command)
    # A string, checked by the command: argparse's own error would be a usage block,
    # not one line.
    command.add_argument(
        "--to",
        metavar="N",
        help="the schema version to reach, from 0 (default: the latest)",
    )
    command.add_argument(
        "--yes", action="store_true", help="confirm going down (it drops what later versions added)"
    )
