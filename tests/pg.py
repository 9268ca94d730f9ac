"""PostgreSQL for tests: a fresh schema per test, a clear skip when no server answers.

The server is ``RELAY_TEST_PG_DSN`` (default: the local one, user ``postgres``,
database ``test``). Every test gets its own schema ``t_<random>``, reached
through a DSN whose ``search_path`` names it, and dropped afterwards, so that
runs never see each other's tables.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import conninfo, sql

PG_DSN = os.environ.get("RELAY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@functools.cache
def unreachable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None if it answers.

    A server that answers but lacks the test database gets it created (a
    fresh machine has only ``postgres``).
    """
    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc) or not _create_database():
            return _why(exc)
    except psycopg.Error as exc:
        return _why(exc)
    return None


def _why(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"PostgreSQL unreachable ({first}); set RELAY_TEST_PG_DSN to test on it"


def _create_database() -> bool:
    """Create the DSN's database through the server's ``postgres`` one; True if it worked."""
    name = conninfo.conninfo_to_dict(PG_DSN).get("dbname")
    if not name:
        return False
    try:
        admin = conninfo.make_conninfo(PG_DSN, dbname="postgres")
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
    except psycopg.errors.DuplicateDatabase:
        return True  # another run made it meanwhile
    except psycopg.Error:
        return False
    return True


def require_postgres() -> None:
    """Skip the calling test, saying why, when PostgreSQL does not answer.

    With ``RELAY_TEST_REQUIRE_ENGINES=1`` (CI sets it) the test fails instead:
    a CI run on a machine that has the engines must not skip their tests.
    """
    reason = unreachable()
    if reason is not None:
        if os.environ.get("RELAY_TEST_REQUIRE_ENGINES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def target() -> tuple[str, int]:
    """The server's host and port (what a proxy forwards to)."""
    params = conninfo.conninfo_to_dict(PG_DSN)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


@dataclass(frozen=True)
class Schema:
    """A schema of its own on the test server."""

    name: str
    dsn: str  # the server's DSN with search_path = this schema

    def via(self, port: int, host: str = "127.0.0.1") -> str:
        """The same DSN through another host and port (a proxy)."""
        return conninfo.make_conninfo(self.dsn, host=host, port=port)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A plain connection in the schema (autocommit), for white-box checks."""
        return psycopg.connect(self.dsn, autocommit=True)


def create_schema() -> Schema:
    require_postgres()
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    # synchronous_commit off: no test here is about the server's own
    # durability, and on a slow disk the WAL flush is most of a test's time.
    options = f"-c search_path={name} -c synchronous_commit=off"
    return Schema(name, conninfo.make_conninfo(PG_DSN, options=options))


def drop_schema(schema: Schema) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        # Bounded: a test that left a transaction open must fail, not hang.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema.name)))


@contextmanager
def fresh_schema() -> Iterator[Schema]:
    """A new schema for the block (the test is skipped without PostgreSQL)."""
    schema = create_schema()
    try:
        yield schema
    finally:
        drop_schema(schema)
