"""PostgreSQL beyond the contract: several processes on one database, a server that goes away.

Several relays share one database, so what SQLite gets from its single
writer is checked here across two or three stores on one schema: messages
become visible in seq order, one-time prekeys are handed out once. A
:class:`~tests.tcpproxy.TcpProxy` in front of the server plays the network
failing and coming back. Each test has its own schema (``tests/pg.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import trio
from psycopg.errors import SerializationFailure

from relay.store import (
    Enqueued,
    OneTimePrekey,
    Outgoing,
    QueueLimits,
    Store,
    StoreUnavailable,
    open_postgres_store,
)
from relay.store._locks import advisory_key
from relay.store._postgres import CONFLICT_RETRIES, PostgresStore
from tests import pg
from tests.tcpproxy import TcpProxy

from .test_contract import T0, keys, new_device, new_user

LIMITS = QueueLimits(max_per_device=10_000)


@pytest.fixture
def schema() -> Iterator[pg.Schema]:
    with pg.fresh_schema() as fresh:
        yield fresh


@pytest.fixture
def postgres() -> None:
    """Skip, saying why, without a test server (here: a skip in Trio code loses its reason)."""
    pg.require_postgres()


@pytest.fixture
async def proxy(postgres: None, nursery: trio.Nursery) -> AsyncIterator[TcpProxy]:
    """A cuttable path to the test server (started; stopped after the test)."""
    running = TcpProxy(*pg.target())
    await running.start(nursery)
    yield running
    await running.stop()


def send(sender: str, device: str, cid: str, to: str = "bob") -> Outgoing:
    return Outgoing(sender, device, "alice", cid, to, None, f"body {cid}", T0, T0 + 3600)


async def until_it_answers(store: Store) -> None:
    """Wait for a store behind a restored proxy to answer again (real time: a real reconnect)."""
    with trio.fail_after(20):
        while True:
            try:
                await store.ping()
                return
            except StoreUnavailable:
                await trio.sleep(0.1)


# -- order ----------------------------------------------------------------------


async def test_messages_from_two_stores_become_visible_in_seq_order(schema: pg.Schema) -> None:
    """Concurrent commits on two stores: every read of a queue is a prefix of the final queue."""
    async with open_postgres_store(schema.dsn, pool_size=4) as first, open_postgres_store(
        schema.dsn, pool_size=4
    ) as second:
        alice = await new_user(first, "alice")
        phone = await new_device(first, alice)
        bob = await new_user(first, "bob")
        bob_phone = await new_device(first, bob)
        reads: list[list[int]] = []
        writing = 8

        async def write(store: Store, task: int) -> None:
            nonlocal writing
            for i in range(15):
                [result] = await store.commit([], [send(alice.id, phone.id, f"{task}-{i}")], LIMITS)
                assert isinstance(result, Enqueued)
            writing -= 1

        async def read(store: Store) -> None:
            while writing:
                reads.append([m.seq for m in await store.pending(bob_phone.id, 0, 1_000)])

        async with trio.open_nursery() as nursery:
            for task in range(8):
                nursery.start_soon(write, (first, second)[task % 2], task)
            nursery.start_soon(read, first)
            nursery.start_soon(read, second)
        final = [m.seq for m in await first.pending(bob_phone.id, 0, 1_000)]
    assert len(final) == 120 and final == sorted(final)
    gaps = [seqs for seqs in reads if seqs != final[: len(seqs)]]
    assert gaps == [], "a read saw a seq before a lower one was visible"
    assert len(reads) > 10  # the readers did read while the writers wrote


async def test_a_commit_waits_for_the_messages_lock(schema: pg.Schema) -> None:
    """While another transaction holds the schema's messages lock, a commit waits, then stores."""
    async with open_postgres_store(schema.dsn, pool_size=2) as store:
        alice = await new_user(store, "alice")
        phone = await new_device(store, alice)
        bob = await new_user(store, "bob")
        bob_phone = await new_device(store, bob)
        with schema.connect() as other:
            hold_messages_lock(other, schema)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.commit, [], [send(alice.id, phone.id, "c1")], LIMITS)
                with trio.fail_after(10):
                    while not _waits_for_an_advisory_lock(other):
                        await trio.sleep(0.01)  # the store's thread reaches the lock
                assert await store.pending(bob_phone.id, 0, 10) == []
                other.rollback()  # releases the lock; the commit goes on
        assert [m.client_id for m in await store.pending(bob_phone.id, 0, 10)] == ["c1"]


def hold_messages_lock(conn: psycopg.Connection[tuple[object, ...]], schema: pg.Schema) -> None:
    """Take the schema's messages lock in *conn*'s transaction (as another relay's commit would)."""
    conn.autocommit = False
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("messages", schema.name),))


def _waits_for_an_advisory_lock(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return row is not None and row[0] > 0


async def test_a_commit_not_granted_the_lock_in_time_is_unavailable(schema: pg.Schema) -> None:
    """Past the store's timeout the commit gives up whole: StoreUnavailable, nothing stored."""
    async with open_postgres_store(schema.dsn, pool_size=2, timeout=0.2) as store:
        alice = await new_user(store, "alice")
        phone = await new_device(store, alice)
        bob = await new_user(store, "bob")
        bob_phone = await new_device(store, bob)
        with schema.connect() as other:
            hold_messages_lock(other, schema)
            with pytest.raises(StoreUnavailable) as caught:
                await store.commit([], [send(alice.id, phone.id, "c1")], LIMITS)
            other.rollback()
        assert "lock timeout" in caught.value.detail
        assert await store.pending(bob_phone.id, 0, 10) == []
        [accepted] = await store.commit([], [send(alice.id, phone.id, "c1")], LIMITS)
        assert isinstance(accepted, Enqueued)
        assert [m.seq for m in await store.pending(bob_phone.id, 0, 10)] == [accepted.seq]


async def test_a_commit_cancelled_mid_transaction_completes_whole(schema: pg.Schema) -> None:
    """Cancelled while its transaction runs, a commit finishes and answers; the caller is
    cancelled at its next checkpoint."""
    async with open_postgres_store(schema.dsn, pool_size=2) as store:
        alice = await new_user(store, "alice")
        phone = await new_device(store, alice)
        bob = await new_user(store, "bob")
        bob_phone = await new_device(store, bob)
        seen: list[object] = []
        with schema.connect() as other:
            hold_messages_lock(other, schema)
            async with trio.open_nursery() as nursery:

                async def sender(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        sends = [send(alice.id, phone.id, "c1")]
                        seen.extend(await store.commit([], sends, LIMITS))
                        await trio.sleep(0)  # the next checkpoint delivers the cancellation
                        seen.append("not cancelled")

                scope = await nursery.start(sender)
                with trio.fail_after(10):
                    while not _waits_for_an_advisory_lock(other):
                        await trio.sleep(0.01)  # the store's thread is inside its transaction
                scope.cancel()
                other.rollback()  # the transaction goes on, and commits
        [result] = seen
        assert isinstance(result, Enqueued)
        assert [m.message_id for m in await store.pending(bob_phone.id, 0, 10)] == [
            result.message_id
        ]


async def test_the_store_closes_even_when_the_body_is_cancelled(schema: pg.Schema) -> None:
    """A cancelled `async with` still closes the pool; the store then refuses calls."""
    with trio.CancelScope() as scope:
        async with open_postgres_store(schema.dsn, pool_size=1) as store:
            scope.cancel()
            await trio.sleep_forever()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    assert store._pool.closed  # white-box: the connections went with it


def test_each_schema_has_its_own_messages_lock() -> None:
    """Two relays in two schemas of one database never wait for each other's lock."""
    assert advisory_key("messages", "a") != advisory_key("messages", "b")
    assert advisory_key("messages", "a") == advisory_key("messages", "a")
    assert advisory_key("messages", "a") != advisory_key("migrate", "a")


# -- one-time prekeys -------------------------------------------------------------


async def test_fetches_through_three_stores_never_share_a_key(schema: pg.Schema) -> None:
    """60 concurrent fetches on three stores for 40 keys: each key once, 20 fetches get none."""
    async with open_postgres_store(schema.dsn, pool_size=3) as a, open_postgres_store(
        schema.dsn, pool_size=3
    ) as b, open_postgres_store(schema.dsn, pool_size=3) as c:
        user = await new_user(a)
        device = await new_device(a, user)
        await a.put_keys(device.id, keys(one_time_ids=range(1, 41)), T0)
        got: list[OneTimePrekey | None] = []

        async def fetch(store: Store) -> None:
            [bundle] = await store.fetch_bundles(user.id, device.id)
            got.append(bundle.one_time_prekey)

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(fetch, (a, b, c)[i % 3])
    assert sorted(k.key_id for k in got if k is not None) == list(range(1, 41))
    assert got.count(None) == 20


async def test_a_fetch_takes_the_next_key_instead_of_waiting_for_a_locked_one(
    schema: pg.Schema,
) -> None:
    """A key another transaction is taking is skipped (not waited for); it stays unused."""
    async with open_postgres_store(schema.dsn, pool_size=2, timeout=0.5) as store:
        user = await new_user(store)
        device = await new_device(store, user)
        await store.put_keys(device.id, keys(one_time_ids=[1, 2, 3]), T0)
        with schema.connect() as other:
            other.autocommit = False
            other.execute("SELECT 1 FROM one_time_prekeys WHERE key_id = 1 FOR UPDATE")
            [bundle] = await store.fetch_bundles(user.id, device.id)
            assert bundle.one_time_prekey is not None and bundle.one_time_prekey.key_id == 2
            other.rollback()
        [again] = await store.fetch_bundles(user.id, device.id)
        assert again.one_time_prekey is not None and again.one_time_prekey.key_id == 1


# -- unavailability ---------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_and_the_store_recovers(
    schema: pg.Schema, proxy: TcpProxy
) -> None:
    """Server gone: reads and writes raise StoreUnavailable; back: the same store works again."""
    async with open_postgres_store(schema.via(proxy.port), pool_size=2, timeout=0.3) as store:
        alice = await new_user(store, "alice")
        await proxy.stop()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get_user(alice.id)
        with pytest.raises(StoreUnavailable):
            await new_user(store, "bob")
        await proxy.start()
        await until_it_answers(store)
        assert await store.get_user(alice.id) == alice
        assert (await new_user(store, "bob")).username == "bob"


async def test_connections_closed_by_the_server_are_replaced_without_an_error(
    schema: pg.Schema,
) -> None:
    """Every pooled connection killed server-side (a restart): the next calls just work."""
    dsn = psycopg.conninfo.make_conninfo(schema.dsn, application_name=schema.name)
    async with open_postgres_store(dsn, pool_size=3) as store:
        alice = await new_user(store, "alice")
        with schema.connect() as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (schema.name,),
            ).fetchone()
        assert killed is not None and killed[0] == 3
        for _ in range(4):
            assert await store.get_user(alice.id) == alice


async def test_opening_an_unreachable_server_says_where_and_never_the_password(
    proxy: TcpProxy,
) -> None:
    """open_postgres_store on a dead port: StoreUnavailable naming host and port, no secret."""
    await proxy.stop()  # the port is known and nobody listens on it
    dsn = f"postgresql://relay:s3cret-pw@127.0.0.1:{proxy.port}/relay"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_postgres_store(dsn, pool_size=1, timeout=0.3):
            pass
    assert f"127.0.0.1:{proxy.port}" in caught.value.detail
    assert "s3cret-pw" not in caught.value.detail and "s3cret-pw" not in repr(caught.value)


async def test_a_closed_store_refuses_calls(schema: pg.Schema) -> None:
    """After aclose every call raises StoreUnavailable, and aclose again is harmless."""
    async with open_postgres_store(schema.dsn, pool_size=1) as store:
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreUnavailable):
            await store.ping()


async def test_a_lost_serialization_conflict_is_retried_then_unavailable(
    schema: pg.Schema,
) -> None:
    """White-box (conflicts cannot be provoked on demand): retried, then StoreUnavailable."""
    async with open_postgres_store(schema.dsn, pool_size=1) as store:
        assert isinstance(store, PostgresStore)
        runs = 0

        def flaky(conn: psycopg.Connection[tuple[object, ...]], fails: int) -> str:
            nonlocal runs
            runs += 1
            conn.execute("SELECT 1")
            if runs <= fails:
                raise SerializationFailure("could not serialize access")
            return "done"

        assert await store._run(lambda c: flaky(c, 2)) == "done"
        assert runs == 3
        runs = 0
        with pytest.raises(StoreUnavailable) as caught:
            await store._run(lambda c: flaky(c, 99))
        assert runs == CONFLICT_RETRIES + 1
        assert "could not serialize" in caught.value.detail
