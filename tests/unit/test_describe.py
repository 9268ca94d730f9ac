"""What the command line says a configuration opens: where, never a password."""

from __future__ import annotations

import pytest

from relay.cli._describe import (
    describe_bus,
    describe_limits,
    describe_redis_url,
    describe_store,
    describe_store_problem,
)
from relay.config import load_config

PG = {"RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": "postgresql://relay:pw-1@db1:5433/chat"}
REDIS = "redis://:pw-2@10.0.0.5:6380/3"


def test_the_embedded_defaults_are_named_as_such() -> None:
    """SQLite file (absolute), in-process bus, in-memory limits."""
    config = load_config(env={"RELAY_STORE_PATH": "/srv/relay/relay.db"})
    assert describe_store(config) == "SQLite file /srv/relay/relay.db"
    assert describe_bus(config).startswith("in-process")
    assert describe_limits(config).startswith("in memory")


def test_a_postgres_store_is_named_without_its_password() -> None:
    """user@host:port/dbname, as the logs name it."""
    assert describe_store(load_config(env=PG)) == "PostgreSQL relay@db1:5433/chat"


def test_redis_backends_are_named_without_their_password() -> None:
    """host:port/db for both the bus and the limits."""
    config = load_config(
        env={
            "RELAY_BUS_BACKEND": "redis",
            "RELAY_BUS_URL": REDIS,
            "RELAY_LIMITS_BACKEND": "redis",
            "RELAY_LIMITS_URL": REDIS,
        }
    )
    for said in (describe_bus(config), describe_limits(config)):
        assert said.startswith("Redis 10.0.0.5:6380/3") and "pw-2" not in said


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://127.0.0.1", "127.0.0.1:6379/0"),
        ("rediss://user:pw@cache.example:6390/1", "cache.example:6390/1 (TLS)"),
        ("redis://[::1]:6379/2", "[::1]:6379/2"),
        ("unix:///run/redis.sock", "unix:/run/redis.sock"),
        ("redis://h:99999/0", "(an unreadable URL)"),
    ],
)
def test_redis_urls_are_described_by_where_they_lead(url: str, said: str) -> None:
    """Every form the config accepts; a malformed port is said to be unreadable."""
    assert describe_redis_url(url) == said


def test_a_store_problem_names_the_store_once() -> None:
    """Prefixed with the store, unless the store's own words already name it."""
    sqlite = load_config(env={"RELAY_STORE_PATH": "/srv/relay/relay.db"})
    assert describe_store_problem(sqlite, "cannot open it: disk I/O error") == (
        "SQLite file /srv/relay/relay.db: cannot open it: disk I/O error"
    )
    pg = load_config(env=PG)
    named = "cannot reach PostgreSQL at relay@db1:5433/chat: timeout"
    assert describe_store_problem(pg, named) == named
