"""``relay migrate`` as an operator runs it, on a SQLite file and on PostgreSQL.

Each run is a subprocess (about a second of imports), so the databases are
prepared and inspected in-process.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.store._migrations import LATEST_VERSION, migrate
from tests import pg
from tests.e2e.test_cli_users import one_line, relay


def query(path: str, text: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(text).fetchall()
    finally:
        conn.close()


def version_of(path: str) -> int:
    return int(str(query(path, "PRAGMA user_version")[0][0]))


@pytest.fixture
def env(relay_env: dict[str, str]) -> dict[str, str]:
    """A SQLite database at the latest version, with one account in it."""
    conn = sqlite3.connect(relay_env["RELAY_STORE_PATH"], isolation_level=None)
    try:
        migrate(conn)
        conn.execute("INSERT INTO users VALUES ('u1', 'alice', x'00', 0.0)")
    finally:
        conn.close()
    return relay_env


@pytest.fixture
def pg_env(relay_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The relay configured for an empty schema of its own on the test server."""
    with pg.fresh_schema() as schema:
        yield {**relay_env, "RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": schema.dsn}


def test_migrate_down_then_up_again_prints_before_what_and_after(env: dict[str, str]) -> None:
    """--to 1 --yes goes down, plain migrate back up: three lines each; the account stays."""
    down = relay(["migrate", "--to", "1", "--yes"], env)
    assert down.returncode == 0, down.stderr
    before, did, after = down.stdout.splitlines()
    assert before.startswith(f"schema version before: {LATEST_VERSION} (SQLite file ")
    assert did.startswith(f"ran down {LATEST_VERSION} (") and after == "schema version after: 1"
    assert version_of(env["RELAY_STORE_PATH"]) == 1

    up = relay(["migrate"], env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[1].startswith("ran up 2 (")
    assert up.stdout.splitlines()[2] == f"schema version after: {LATEST_VERSION}"
    assert query(env["RELAY_STORE_PATH"], "SELECT username FROM users") == [("alice",)]


def test_migrate_at_the_latest_has_nothing_to_do(env: dict[str, str]) -> None:
    """An up-to-date database is left alone, and the command says so."""
    result = relay(["migrate"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == (
        f"nothing to do: the schema is at version {LATEST_VERSION}"
    )


def test_going_down_without_yes_is_refused_and_changes_nothing(env: dict[str, str]) -> None:
    """Down drops data: without --yes it is one line naming what would go, exit 2."""
    result = relay(["migrate", "--to", "0"], env)
    assert result.returncode == 2
    line = one_line(result)
    assert "--yes" in line and "accounts" in line
    assert version_of(env["RELAY_STORE_PATH"]) == LATEST_VERSION


@pytest.mark.parametrize("bad", [str(LATEST_VERSION + 1), "latest"])
def test_a_bad_version_is_one_line(env: dict[str, str], bad: str) -> None:
    """--to outside 0..latest, or not a number: one line naming the known range, exit 2."""
    result = relay(["migrate", "--to", bad], env)
    assert result.returncode == 2
    assert f"0 to {LATEST_VERSION}" in one_line(result)


def test_a_missing_sqlite_file_is_one_line_and_not_created(relay_env: dict[str, str]) -> None:
    """No database at store.path: one line naming it, exit 1, and no file appears."""
    result = relay(["migrate"], relay_env)
    assert result.returncode == 1
    assert relay_env["RELAY_STORE_PATH"] in one_line(result)
    assert not Path(relay_env["RELAY_STORE_PATH"]).exists()


def test_migrate_postgres_up_from_empty_and_down_again(pg_env: dict[str, str]) -> None:
    """On PostgreSQL: an empty schema goes up to the latest, then down to 1."""
    up = relay(["migrate"], pg_env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[0].startswith("schema version before: 0 (PostgreSQL ")
    assert up.stdout.splitlines()[2] == f"schema version after: {LATEST_VERSION}"
    down = relay(["migrate", "--to", "1", "--yes"], pg_env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines()[1].startswith(f"ran down {LATEST_VERSION} (")
    assert down.stdout.splitlines()[2] == "schema version after: 1"


def test_an_unreachable_postgres_is_one_line_without_the_password(
    relay_env: dict[str, str],
) -> None:
    """A DSN nobody answers: one line saying where (never the password), exit 1."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **relay_env,
        "RELAY_STORE_BACKEND": "postgres",
        "RELAY_STORE_DSN": f"postgresql://relay:s3cret-pw@127.0.0.1:{port}/relay",
    }
    result = relay(["migrate"], env)
    assert result.returncode == 1
    line = one_line(result)
    assert f"relay@127.0.0.1:{port}/relay is unavailable" in line
    assert "s3cret-pw" not in result.stderr + result.stdout
