"""The Store contract runs once per adapter.

To add an adapter, write a factory ``(request, tmp_path) -> Backend`` and
register it in ``BACKENDS``; every test taking ``store`` or ``backend`` then
runs against it too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from relay.store import Store, open_postgres_store, open_sqlite_store
from tests import pg


@dataclass(frozen=True)
class Backend:
    """One adapter on one empty database.

    ``open()`` may be called again after the previous store was closed: it
    reopens the *same* database (persistence and migration tests).
    """

    name: str
    open: Callable[[], AbstractAsyncContextManager[Store]]
    kept_bodies: Callable[[], list[str]]
    """Every message body the database still holds (read beside the store, not through it)."""


def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = str(tmp_path / "relay.db")

    def kept_bodies() -> list[str]:
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT body FROM messages WHERE body != '' ORDER BY seq")
            return [str(r[0]) for r in rows]

    return Backend("sqlite-file", lambda: open_sqlite_store(path), kept_bodies)


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh schema on the test server (skipped, saying why, when it does not answer)."""
    schema = pg.create_schema()
    request.addfinalizer(lambda: pg.drop_schema(schema))
    # A small pool: enough for the concurrency tests, quick to open per test.

    def kept_bodies() -> list[str]:
        with psycopg.connect(schema.dsn) as conn:
            rows = conn.execute("SELECT body FROM messages WHERE body <> ''::bytea ORDER BY seq")
            return [bytes(r[0]).decode() for r in rows]

    return Backend("postgres", lambda: open_postgres_store(schema.dsn, pool_size=3), kept_bodies)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "sqlite-file": _sqlite_file,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as opened:
        yield opened
