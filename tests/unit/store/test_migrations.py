"""Schema migrations on both engines: up, down to any version, and up again.

Each test takes ``engine``: a fresh database of one engine (a SQLite file, or
a PostgreSQL schema) with the operator's migration call and a few white-box
readers (version, schema, row counts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.store import (
    Device,
    Enqueued,
    Migrated,
    NewMessage,
    QueueFull,
    SchemaVersionError,
    Store,
    User,
    migrate_postgres,
    migrate_sqlite,
    open_postgres_store,
    open_sqlite_store,
)
from relay.store import _migrations as sqlite_migrations
from relay.store import _postgres_migrations as postgres_migrations
from relay.store._migrations import LATEST_VERSION, MIGRATIONS, plan
from tests import pg

from .test_contract import DAY, T0, keys, new_device, new_session, new_user


@dataclass(frozen=True)
class Engine:
    name: str
    open: Callable[[], AbstractAsyncContextManager[Store]]
    migrate: Callable[[int | None], Migrated]
    query: Callable[[str], list[tuple[Any, ...]]]  # white-box reads
    schema: Callable[[], list[tuple[Any, ...]]]  # everything that defines the schema
    version: Callable[[], int]
    set_version: Callable[[int], None]

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])


def _sqlite(tmp_path: Path) -> Iterator[Engine]:
    path = str(tmp_path / "relay.db")

    def query(text: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return conn.execute(text).fetchall()
        finally:
            conn.close()

    def set_version(version: int) -> None:
        query(f"PRAGMA user_version = {version:d}")

    yield Engine(
        "sqlite",
        lambda: open_sqlite_store(path),
        lambda target: migrate_sqlite(path, target),
        query,
        lambda: query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"),
        lambda: int(query("PRAGMA user_version")[0][0]),
        set_version,
    )


_PG_SCHEMA = [
    "SELECT 'column', table_name, column_name, data_type, is_nullable, column_default,"
    " collation_name, is_identity FROM information_schema.columns"
    " WHERE table_schema = current_schema()",
    "SELECT 'index', tablename, indexname, indexdef, '', '', '', ''"
    " FROM pg_indexes WHERE schemaname = current_schema()",
    "SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid), '', '',"
    " '', '' FROM pg_constraint WHERE connamespace = current_schema()::regnamespace",
    "SELECT 'sequence', sequencename, data_type::text, '', '', '', '', ''"
    " FROM pg_sequences WHERE schemaname = current_schema()",
]


def _postgres() -> Iterator[Engine]:
    with pg.fresh_schema() as schema:

        def query(text: str) -> list[tuple[Any, ...]]:
            with schema.connect() as conn:
                cursor = conn.execute(text.encode())
                return cursor.fetchall() if cursor.description else []

        def set_version(version: int) -> None:
            query(f"UPDATE relay_schema SET version = {version:d}")

        yield Engine(
            "postgres",
            lambda: open_postgres_store(schema.dsn, pool_size=2),
            lambda target: migrate_postgres(schema.dsn, target),
            query,
            # Column order is left out: PostgreSQL appends a column added again.
            lambda: sorted(row for text in _PG_SCHEMA for row in query(text)),
            lambda: int(query("SELECT version FROM relay_schema")[0][0]),
            set_version,
        )


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _postgres())


async def populate(engine: Engine) -> None:
    """Something in every table of the latest schema."""
    async with engine.open() as store:
        alice = await new_user(store, "alice")
        phone = await new_device(store, alice, "phone")
        await new_session(store, phone)
        await store.put_keys(phone.id, keys(one_time_ids=[1, 2]), T0)
        spare = await new_device(store, alice, "spare")
        await new_session(store, spare, b"spare")
        await store.delete_device(alice.id, spare.id, T0)  # a deleted session's copy
        bob = await new_user(store, "bob")
        bob_phone = await new_device(store, bob, "phone")
        carol = await new_user(store, "carol")
        await store.delete_user(carol.id, T0, T0 + 90 * DAY)  # a retired username
        [sent] = await store.enqueue([note(alice, phone, bob, bob_phone, "m1")], 100)
        assert isinstance(sent, Enqueued)


def note(sender: User, device: Device, to: User, to_device: Device, cid: str) -> NewMessage:
    return NewMessage(
        sender.id, device.id, sender.username, cid, to.id, [to_device.id], f"body {cid}",
        T0, T0 + DAY,
    )


# -- planning (pure) ------------------------------------------------------------


def test_plan_goes_up_one_version_at_a_time() -> None:
    """From 1 to the latest: each later version's up step, in order."""
    steps = plan(1, None, MIGRATIONS)
    assert [(s.migration.version, s.up) for s in steps] == [
        (v, True) for v in range(2, LATEST_VERSION + 1)
    ]


def test_plan_goes_down_newest_first() -> None:
    """From the latest to 0: every down step, the newest first."""
    steps = plan(LATEST_VERSION, 0, MIGRATIONS)
    assert [(s.migration.version, s.up) for s in steps] == [
        (v, False) for v in range(LATEST_VERSION, 0, -1)
    ]
    assert steps[-1].version_after == 0


def test_plan_to_the_current_version_is_empty() -> None:
    """Nothing to do is no steps."""
    assert plan(2, 2, MIGRATIONS) == []


@pytest.mark.parametrize("target", [-1, LATEST_VERSION + 1])
def test_plan_refuses_a_version_the_code_does_not_know(target: int) -> None:
    """Below 0 or past the latest is a ValueError naming the known range."""
    with pytest.raises(ValueError, match=f"0 to {LATEST_VERSION}"):
        plan(1, target, MIGRATIONS)


def test_plan_refuses_a_database_newer_than_the_code() -> None:
    """The code cannot know how to leave a version it has never seen, down included."""
    with pytest.raises(SchemaVersionError, match="newer"):
        plan(LATEST_VERSION + 1, 1, MIGRATIONS)


def test_both_engines_have_the_same_versions() -> None:
    """PostgreSQL's migrations mirror SQLite's, number for number."""
    sqlite, postgres = sqlite_migrations.MIGRATIONS, postgres_migrations.MIGRATIONS
    assert [m.version for m in sqlite] == [m.version for m in postgres]
    assert [m.version for m in sqlite] == list(range(1, LATEST_VERSION + 1))
    assert [m.summary for m in sqlite] == [m.summary for m in postgres]


# -- on each engine ---------------------------------------------------------------


async def test_opening_a_new_database_migrates_it_to_the_latest(engine: Engine) -> None:
    """The store's open creates the whole schema, at the latest version."""
    async with engine.open():
        pass
    assert engine.version() == LATEST_VERSION
    assert engine.migrate(None).steps == ()


@pytest.mark.parametrize("target", range(LATEST_VERSION))
async def test_up_down_up_keeps_what_remains_and_restores_the_schema(
    engine: Engine, target: int
) -> None:
    """Down to *target* keeps the data of the versions left; up again is the fresh schema."""
    await populate(engine)
    fresh = engine.schema()
    counts = {t: engine.count(t) for t in ("users", "devices", "sessions", "messages", "queue")}

    down = engine.migrate(target)
    assert (down.before, down.after, engine.version()) == (LATEST_VERSION, target, target)
    assert [s.migration.version for s in down.steps] == list(range(LATEST_VERSION, target, -1))
    if target >= 1:
        assert {t: engine.count(t) for t in counts} == counts

    up = engine.migrate(None)
    assert (up.before, up.after) == (target, LATEST_VERSION)
    assert engine.schema() == fresh
    async with engine.open() as store:
        alice, bob = await store.get_user_by_name("alice"), await store.get_user_by_name("bob")
        if target == 0:
            assert alice is None  # the empty schema: nothing was left to keep
            return
        assert alice is not None and bob is not None
        [phone], [bob_phone] = await store.list_devices(alice.id), await store.list_devices(bob.id)
        assert (await store.prekey_status(phone.id)).one_time_prekeys == 2
        assert [m.body for m in await store.pending(bob_phone.id, 0, 10)] == ["body m1"]
        # v2's column was refilled from the messages: alice's share is counted.
        [again] = await store.enqueue([note(alice, phone, bob, bob_phone, "m2")], 100, 1)
        assert again == QueueFull(device_id=bob_phone.id, sender_share=True)


async def test_a_database_newer_than_the_code_is_refused(engine: Engine) -> None:
    """Opening or migrating a newer database fails and leaves it as it was."""
    async with engine.open():
        pass
    engine.set_version(LATEST_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="newer"):
        async with engine.open():
            pass
    with pytest.raises(SchemaVersionError):
        engine.migrate(1)
    assert engine.version() == LATEST_VERSION + 1


async def test_an_unknown_target_changes_nothing(engine: Engine) -> None:
    """Migrating to a version past the latest raises ValueError; the database stays put."""
    async with engine.open():
        pass
    schema = engine.schema()
    with pytest.raises(ValueError, match="no schema version"):
        engine.migrate(LATEST_VERSION + 1)
    assert (engine.version(), engine.schema()) == (LATEST_VERSION, schema)
