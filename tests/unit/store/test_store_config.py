"""[store] backend = "postgres": the keys, their checks, and the adapter app.open_store picks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import open_store
from relay.config import ConfigError, load_config
from relay.store import PostgresStore, SQLiteStore, describe_dsn
from tests import pg

DSN = "postgresql://relay:s3cret-pw@db.example.com:6543/chat"


def test_postgres_is_chosen_with_a_dsn_from_the_environment() -> None:
    """RELAY_STORE_BACKEND and RELAY_STORE_DSN configure it; pool_size defaults to 10."""
    config = load_config(env={"RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": DSN})
    assert (config.store.backend, config.store.dsn, config.store.pool_size) == (
        "postgres", DSN, 10,
    )


def test_postgres_without_a_dsn_is_one_line_naming_the_key() -> None:
    """The start stops with one line saying which key is missing."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"RELAY_STORE_BACKEND": "postgres"})
    assert "store.dsn (RELAY_STORE_DSN)" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_dsn_never_shows_in_a_repr() -> None:
    """The DSN (and its password) is a Secret: a logged config shows none of it."""
    config = load_config(env={"RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": DSN})
    assert "s3cret-pw" not in repr(config) and "db.example.com" not in repr(config.store)


def test_describe_dsn_says_where_without_the_password() -> None:
    """Operators see user, host, port and database; never the password."""
    assert describe_dsn(DSN) == "relay@db.example.com:6543/chat"
    assert describe_dsn("host=/run/postgresql dbname=relay") == "/run/postgresql:5432/relay"


@pytest.fixture
def schema() -> Iterator[pg.Schema]:
    with pg.fresh_schema() as fresh:  # skips, saying why, without a test server
        yield fresh


async def test_open_store_opens_postgres_for_backend_postgres(schema: pg.Schema) -> None:
    """backend = "postgres" opens a PostgresStore on the DSN, with pool_size connections."""
    config = load_config(
        env={
            "RELAY_STORE_BACKEND": "postgres",
            "RELAY_STORE_DSN": schema.dsn,
            "RELAY_STORE_POOL_SIZE": "2",
        }
    )
    async with open_store(config) as store:
        assert isinstance(store, PostgresStore)
        await store.ping()


async def test_open_store_opens_sqlite_by_default(tmp_path: Path) -> None:
    """Without [store] backend, the SQLite file at store.path."""
    config = load_config(env={"RELAY_STORE_PATH": str(tmp_path / "relay.db")})
    async with open_store(config) as store:
        assert isinstance(store, SQLiteStore)
    assert (tmp_path / "relay.db").exists()
