"""``relay migrate [--to N] [--yes]``: move the configured store's schema to a version.

Up to the latest by default, or to N, down included. Going down drops what
the later versions added (their tables and columns, with their data), so it
needs ``--yes``. Prints three lines: the version found, what ran, the version
left; fails with one line (exit 1, or 2 for a bad N or a missing ``--yes``),
never a traceback. Each migration runs in one transaction: a failure leaves
the schema at its previous version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Config
from ..store import (
    LATEST_VERSION,
    DownNotConfirmed,
    Migrated,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    migrate_postgres,
    migrate_sqlite,
)
from ._describe import describe_store

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Stop(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def run_migrate(config: Config, args: argparse.Namespace) -> int:
    """Run ``relay migrate``; the exit code."""
    try:
        target = _target(args.to)
        done = _migrate(config, target, allow_down=args.yes)
    except _Stop as stop:
        print(f"relay: {stop}", file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:
        print("relay: interrupted; the migration rolled back, nothing changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"schema version before: {done.before} ({describe_store(config)})")
    print(done.describe())
    print(f"schema version after: {done.after}")
    return 0


def _target(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        target = int(text)
    except ValueError:
        target = -1
    if not 0 <= target <= LATEST_VERSION:
        raise _Stop(
            f"--to {text}: no such schema version; this relay knows 0 to {LATEST_VERSION}",
            EXIT_USAGE,
        )
    return target


def _migrate(config: Config, target: int | None, *, allow_down: bool) -> Migrated:
    store = config.store
    try:
        if store.backend == "postgres":
            return migrate_postgres(store.dsn, target, store.busy_timeout, allow_down=allow_down)
        path = Path(store.path).resolve()
        if not path.is_file():
            raise _Stop(
                f"no database at {path} (store.path, RELAY_STORE_PATH): nothing to migrate; "
                "pass the relay's --config, or run `relay serve` once to create it"
            )
        return migrate_sqlite(str(path), target, store.busy_timeout, allow_down=allow_down)
    except DownNotConfirmed as down:
        dropped = "; ".join(s.migration.summary for s in down.planned.steps)
        raise _Stop(
            f"going down from version {down.planned.before} to {down.planned.after} drops "
            f"{dropped} (data included); pass --yes to do it",
            EXIT_USAGE,
        ) from None
    except StoreUnavailable as exc:
        where = describe_store(config)
        raise _Stop(f"{where} is unavailable, nothing changed: {exc.detail}") from None
    except (SchemaVersionError, StoreError) as exc:
        raise _Stop(f"{describe_store(config)}: {exc}") from None
