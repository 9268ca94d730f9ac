"""``relay user add|list|delete|passwd|unlock NAME``: accounts, against the configured store.

Each command says which store it opened (a relay may use another one), works
on that store directly, and tells the running relay — through its admin
endpoint — what must take effect at once (sessions ended, a lock lifted).
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from ..app import open_services
from ..config import Config
from ..errors import Refused
from ..obs import configure_logging
from ..services import Services
from ..store import StoreError, StoreUnavailable
from ._admin_client import AdminUnreachable, call_admin
from ._describe import describe_store, describe_store_problem

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
T = TypeVar("T")


class Stop(Exception):
    """End the command with this one line on stderr and this exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def run_user_command(config: Config, args: argparse.Namespace) -> int:
    """Run ``relay user …``; the exit code. Never a traceback for an operator's mistake."""
    configure_logging("error", config.log.format)  # the command prints what it did
    if not config.auth.jwt_secret:
        # These commands sign nothing; the services just need some secret.
        config = config.replace(auth__jwt_secret=secrets.token_urlsafe(48))
    try:
        return _COMMANDS[args.user_command](config, args)
    except Stop as stop:
        print(f"relay: {stop}", file=sys.stderr)
        return stop.code
    except EOFError:
        print("relay: end of input before an answer; nothing changed", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("relay: interrupted; nothing changed", file=sys.stderr)
        return EXIT_INTERRUPTED


# -- the commands -----------------------------------------------------------


def _add(config: Config, args: argparse.Namespace) -> int:
    password = _new_password(args)
    created = config.store.backend == "sqlite" and not Path(config.store.path).exists()
    user = _with_services(config, lambda s: s.auth.register(args.name, password), create=True)
    note = " (a new database)" if created else ""
    print(f"created user {user.username} ({user.id}) in {describe_store(config)}{note}")
    return 0


def _list(config: Config, args: argparse.Namespace) -> int:
    users = _with_services(config, lambda s: s.accounts.list_users())
    print(f"{len(users)} account(s) in {describe_store(config)}", file=sys.stderr)
    print(f"{'USERNAME':<32} {'DEVICES':>7}  {'LAST SEEN (UTC)':<19}  {'CREATED (UTC)':<19}  ID")
    for u in users:
        print(
            f"{u.username:<32} {u.devices:>7}  {_when(u.last_seen_at):<19}  "
            f"{_when(u.created_at):<19}  {u.id}"
        )
    return 0


def _delete(config: Config, args: argparse.Namespace) -> int:
    name = args.name.lower()
    _store_must_exist(config)
    if not args.yes:
        if not sys.stdin.isatty():
            raise Stop("deleting needs --yes when there is no terminal to confirm on", EXIT_USAGE)
        answer = input(
            f"Delete {name} with its devices, keys and queued messages, in "
            f"{describe_store(config)}? Type the username to confirm: "
        )
        if answer.strip().lower() != name:
            raise Stop("not confirmed; nothing deleted")
    ended = _with_services(config, lambda s: s.accounts.remove(name))
    print(f"deleted user {name} from {describe_store(config)}")
    _end_sessions_now(config, ended, "account_removed")
    return 0


def _passwd(config: Config, args: argparse.Namespace) -> int:
    _store_must_exist(config)
    password = _new_password(args)
    ended = _with_services(config, lambda s: s.accounts.reset_password(args.name, password))
    print(f"set the password of {args.name.lower()} in {describe_store(config)}")
    _end_sessions_now(config, ended, "password_reset")
    return 0


def _unlock(config: Config, args: argparse.Namespace) -> int:
    name = args.name.lower()
    if _shared_with_relays(config):  # the locks are in Redis: lift them there
        lifted = _with_services(config, lambda s: s.accounts.unlock(name))
        print(f"unlocked {name} ({lifted} lock record(s) lifted, in Redis)")
        return 0
    try:
        answer = call_admin(config, f"/admin/users/{name}/unlock", {})
    except AdminUnreachable as why:
        raise Stop(
            f"cannot unlock {name}: lockouts live in the running relay's memory, and {why}; "
            "enable [admin] (docs/operations.md), or restart the relay"
        ) from None
    print(f"unlocked {name} ({answer.get('unlocked', 0)} lock record(s) lifted)")
    return 0


_COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "add": _add,
    "list": _list,
    "delete": _delete,
    "passwd": _passwd,
    "unlock": _unlock,
}


# -- helpers ------------------------------------------------------------------


def _with_services(
    config: Config, work: Callable[[Services], Awaitable[T]], *, create: bool = False
) -> T:
    """Run *work* over services built on the configured store (which must exist unless *create*)."""
    if not create:
        _store_must_exist(config)
    config = config.replace(auth__open_registration=True)

    async def go() -> T:
        async with open_services(config) as services:
            return await work(services)

    try:
        return trio.run(go)
    except StoreUnavailable as exc:  # before Refused: it is one, but says less
        problem = describe_store_problem(config, exc.detail)
        raise Stop(f"the store is unavailable, nothing changed: {problem}") from None
    except Refused as refused:
        raise Stop(refused.message) from None
    except StoreError as exc:  # e.g. a schema newer than this relay
        raise Stop(describe_store_problem(config, str(exc))) from None


def _store_must_exist(config: Config) -> None:
    if config.store.backend != "sqlite":
        return  # a server: opening it says whether it is there
    path = Path(config.store.path).resolve()
    if not path.exists():
        raise Stop(
            f"no database at {path} (store.path, RELAY_STORE_PATH): is this the relay's "
            "configuration? Pass its --config, or run `relay serve` once to create the database"
        )


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise Stop("no terminal to ask for the password on; pass --password-stdin", EXIT_USAGE)
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise Stop("the passwords do not match; nothing changed")
    return password


def _end_sessions_now(config: Config, ended: list[str], reason: str) -> None:
    """Tell the running relay that these sessions ended (tokens refused, sockets 4003)."""
    if not ended:
        return
    if _shared_with_relays(config):
        # Revoker already wrote them to Redis and published them on its bus.
        print(f"ended {len(ended)} session(s) on the running relays (through Redis)")
        return
    try:
        call_admin(config, "/admin/sessions/revoke", {"session_ids": ended, "reason": reason})
        print(f"ended {len(ended)} session(s) on the running relay")
    except AdminUnreachable as why:
        ttl = int(config.auth.access_token_ttl // 60)
        print(
            f"relay: note: {why}; if a relay runs on this store, the {len(ended)} ended "
            f"session(s) keep working there for up to {ttl} min (their access tokens), "
            "or until it restarts",
            file=sys.stderr,
        )


def _shared_with_relays(config: Config) -> bool:
    """Whether this command reaches the running relays' limits and bus itself (Redis)."""
    return config.limits.backend == "redis" and config.bus.backend == "redis"


def _when(unix_time: float | None) -> str:
    if unix_time is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix_time))
