"""PostgreSQL adapter of the Store port: the store several relays can share.

**Threads, not a Trio-native driver.** No Trio-native PostgreSQL driver is
mature (design §8): the asyncio ones cannot run under Trio, and anyio-based
ones are young. psycopg 3 is the dependable choice, and it is synchronous: every
call runs in a Trio worker thread (``trio.to_thread.run_sync``) on a
connection from a ``psycopg_pool.ConnectionPool``, through a
``CapacityLimiter`` as large as the pool, so a thread never waits for a
connection while holding a token another call could use. The thread hop
costs tens of microseconds; batched writes (a group commit of many messages
is one call, one transaction and a fixed number of statements) amortise it.

**Transactions.** Each method is one transaction (READ COMMITTED, the
server's default); where SQLite's single writer made read-then-write logic
safe, row locks do here (see the ``_postgres_*`` modules). Messages are
stored under one advisory lock so that their ``seq`` order is their commit
order (``_postgres_messages``). Serialization failures and deadlocks are
retried a few times, then reported as :class:`StoreUnavailable`.

**Unavailability.** A refused or lost connection, a pool that cannot hand
out a connection within *timeout*, a lock not granted within *timeout*
(``lock_timeout``), a full disk, a read-only server (failover): every "not
now" raises :class:`StoreUnavailable`, and the transaction rolled back. The
pool reconnects by itself in the background, so the store recovers when
PostgreSQL does, without a restart. A connection found dead when its
transaction begins (after a restart of PostgreSQL, say) is dropped and the
call tried again on another: nothing had been sent on it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import trio
from psycopg import conninfo
from psycopg.errors import DeadlockDetected, ReadOnlySqlTransaction, SerializationFailure
from psycopg_pool import ConnectionPool

from ..crypto import KeyUpload
from . import _postgres_accounts as accounts
from . import _postgres_keys as keys
from . import _postgres_lifecycle as lifecycle
from . import _postgres_messages as queue
from ._locks import advisory_key
from ._migrations import Migrated
from ._port import (
    Bundle,
    Device,
    Enqueued,
    NewMessage,
    Outgoing,
    PrekeyStatus,
    PutKeysResult,
    QueuedMessage,
    QueueFull,
    QueueLimits,
    RefreshResult,
    SendResult,
    Session,
    StoreUnavailable,
    User,
    UserSummary,
)
from ._postgres_accounts import Conn
from ._postgres_migrations import current_schema, migrate_to
from ._routing import merge, route_all

if TYPE_CHECKING:
    from ._port import Store

T = TypeVar("T")

POOL_SIZE = 10
"""Default connections per relay process (and worker threads using them)."""
TIMEOUT = 5.0
"""Default seconds a call waits for a connection or a lock before StoreUnavailable."""
CONFLICT_RETRIES = 3
"""Times a transaction that lost a serialization conflict or a deadlock is run again."""
RECONNECT_TIMEOUT = 10.0
"""Seconds the pool's background reconnection backs off (1 s, 2 s, 4 s…) before
giving up; the next call then starts a fresh attempt at once."""

# "Not now": the server or the network, never our SQL or our data.
_UNAVAILABLE = (psycopg.OperationalError, ReadOnlySqlTransaction)


class _StaleConnection(Exception):
    """The pooled connection was dead before its transaction began (nothing was sent)."""


def _connection_kwargs(dsn: str, timeout: float) -> dict[str, Any]:
    """Defaults for what the DSN leaves unsaid (libpq would wait for ever otherwise)."""
    given = conninfo.conninfo_to_dict(dsn)
    defaults: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's minimum is 2 s
        # An idle connection to a vanished server is noticed within a minute...
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        # ... and a query sent into a dead network fails after 30 s, not
        # after TCP's retransmissions give up (about 15 minutes).
        "tcp_user_timeout": 30_000,
        "application_name": "relay",
    }
    return {key: value for key, value in defaults.items() if key not in given}


class PostgresStore:
    """The :class:`~relay.store.Store` port over a PostgreSQL database.

    Open it with :func:`open_postgres_store`. Every method runs as one
    transaction on a pooled connection in a worker thread, and is a Trio
    checkpoint.

    Cancellation: a call cancelled while it waits for a connection slot does
    nothing. Once its worker thread has started, the thread is not abandoned
    (``abandon_on_cancel=False``): the caller waits for it, so the
    transaction commits or rolls back as a whole, and the cancellation is
    delivered at the caller's next checkpoint. A committed write is never
    half-done, and never done behind a caller who was told it failed —
    except when the connection is lost during COMMIT itself, when nobody can
    know (the caller gets :class:`StoreUnavailable`; message sends are
    idempotent by client id, so a resend is safe).

    Any call after :meth:`aclose` raises :class:`StoreUnavailable`.
    """

    def __init__(
        self, pool: ConnectionPool[Any], pool_size: int, messages_lock: int, dsn: str
    ) -> None:
        self._pool = pool
        self._pool_size = pool_size
        self._messages_lock = messages_lock
        self._closed = False
        self._limiter = trio.CapacityLimiter(pool_size)
        self._secret = _password(dsn)

    # -- running transactions ------------------------------------------------
    async def _run(self, fn: Callable[[Conn], T]) -> T:
        return await trio.to_thread.run_sync(
            self._call, fn, limiter=self._limiter, abandon_on_cancel=False
        )

    def _call(self, fn: Callable[[Conn], T]) -> T:
        """*fn* in one transaction, on the worker thread; "not now" as StoreUnavailable."""
        stale = conflicts = 0
        while True:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            try:
                return self._transaction(fn)
            except _StaleConnection as exc:
                stale += 1  # the pool drops it; every pooled one may be dead
                if stale > self._pool_size:
                    raise StoreUnavailable(self._detail(exc.__cause__ or exc)) from exc
            except (SerializationFailure, DeadlockDetected) as exc:
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise StoreUnavailable(self._detail(exc)) from exc
                # Jittered, so that the two losers of a deadlock do not meet again.
                time.sleep(random.uniform(0, 0.01 * 2**conflicts))  # noqa: S311
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(self._detail(exc)) from exc

    def _transaction(self, fn: Callable[[Conn], T]) -> T:
        with self._pool.connection() as conn:
            begun = False
            try:
                with conn.transaction():
                    begun = True
                    return fn(conn)
            except psycopg.OperationalError as exc:
                if not begun and conn.broken:
                    raise _StaleConnection from exc
                raise

    def _detail(self, exc: BaseException) -> str:
        """The driver's words on one line, for the log; never the DSN's password."""
        return _redacted(str(exc) or type(exc).__name__, self._secret)[:500]

    # -- health -----------------------------------------------------------
    async def ping(self) -> None:
        """Run ``SELECT 1``; raise :class:`StoreUnavailable` if PostgreSQL does not answer."""
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Refuse new calls and close the pool (calls in flight finish first). Idempotent."""
        self._closed = True
        # Shielded: closing from a cancelled scope (shutdown, a failed
        # `async with`) must still release the connections.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._pool.close)

    # -- accounts ---------------------------------------------------------
    async def create_user(self, username: str, password_hash: bytes, now: float) -> User:
        """Create a user; raise :class:`UsernameTaken` if the name exists or is retired."""
        return await self._run(lambda c: accounts.create_user(c, username, password_hash, now))

    async def get_user(self, user_id: str) -> User | None:
        return await self._run(lambda c: accounts.get_user(c, user_id))

    async def get_user_by_name(self, username: str) -> User | None:
        return await self._run(lambda c: accounts.get_user_by_name(c, username))

    async def list_users(self) -> list[UserSummary]:
        return await self._run(lifecycle.list_users)

    async def set_password(self, user_id: str, password_hash: bytes) -> bool:
        return await self._run(lambda c: lifecycle.set_password(c, user_id, password_hash))

    async def delete_user(
        self, user_id: str, now: float, retire_until: float
    ) -> list[str] | None:
        """Delete the account and all that is its; see the port. One transaction."""
        return await self._run(lambda c: lifecycle.delete_user(c, user_id, now, retire_until))

    # -- devices ----------------------------------------------------------
    async def create_device(self, user_id: str, name: str, now: float) -> Device:
        """Create a device seen at *now*; raise :class:`StoreError` for an unknown user."""
        return await self._run(lambda c: accounts.create_device(c, user_id, name, now))

    async def get_device(self, device_id: str) -> Device | None:
        return await self._run(lambda c: accounts.get_device(c, device_id))

    async def list_devices(self, user_id: str) -> list[Device]:
        """The user's devices, oldest first."""
        return await self._run(lambda c: accounts.list_devices(c, user_id))

    async def resolve_users(self, usernames: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        names = list(usernames)
        return await self._run(lambda c: accounts.resolve_users(c, names))

    async def count_devices(self, user_id: str) -> int:
        return await self._run(lambda c: accounts.count_devices(c, user_id))

    async def delete_device(self, user_id: str, device_id: str, now: float) -> list[str] | None:
        """Delete the device with its keys, queued messages and sessions; see the port."""
        def work(c: Conn) -> list[str] | None:
            copies = queue.queued_seqs(c, device_id)
            active = accounts.delete_device(c, user_id, device_id, now)
            if active is not None:
                queue.forget_delivered(c, copies)
            return active

        return await self._run(work)

    # -- sessions ---------------------------------------------------------
    async def create_session(
        self, user_id: str, device_id: str, refresh_hash: bytes, now: float, expires_at: float
    ) -> Session:
        """Create a session; raise :class:`StoreError` if the user has no such device."""
        return await self._run(
            lambda c: accounts.create_session(c, user_id, device_id, refresh_hash, now, expires_at)
        )

    async def get_session(self, session_id: str) -> Session | None:
        return await self._run(lambda c: accounts.get_session(c, session_id))

    async def list_sessions(self, user_id: str, now: float) -> list[Session]:
        """The user's active sessions on all devices, oldest first."""
        return await self._run(lambda c: accounts.list_sessions(c, user_id, now))

    async def rotate_refresh(
        self,
        old_hash: bytes,
        new_hash: bytes,
        now: float,
        expires_at: float,
        max_age: float | None = None,
    ) -> RefreshResult:
        """Spend *old_hash* for *new_hash*; a spent one revokes its session. See the port.

        Concurrent rotations of one token (on any process) are serialised on
        the session's row: one rotates, the others see a spent token.
        """
        return await self._run(
            lambda c: accounts.rotate_refresh(c, old_hash, new_hash, now, expires_at, max_age)
        )

    async def revoke_session(
        self, session_id: str, now: float, user_id: str | None = None
    ) -> Session | None:
        """Revoke the active session (of *user_id*, if given); return it as it was."""
        return await self._run(lambda c: accounts.revoke_session(c, session_id, now, user_id))

    async def revoke_user_sessions(
        self, user_id: str, now: float, keep: str | None = None
    ) -> list[str]:
        """Revoke every active session of the user except *keep*; their ids."""
        return await self._run(lambda c: lifecycle.revoke_user_sessions(c, user_id, now, keep))

    async def revoked_since(self, since: float) -> list[Session]:
        """Sessions revoked at or after *since*, oldest revocation first."""
        return await self._run(lambda c: accounts.revoked_since(c, since))

    async def touch_session(self, session_id: str, now: float) -> None:
        """Record use of an active session and its device; ignore dead sessions."""
        await self._run(lambda c: accounts.touch_session(c, session_id, now))

    # -- keys ---------------------------------------------------------------
    async def put_keys(self, device_id: str, upload: KeyUpload, now: float) -> PutKeysResult:
        """Store the device's bundle in one transaction (all or nothing); see the port."""
        return await self._run(lambda c: keys.put_keys(c, device_id, upload, now))

    async def fetch_bundles(self, user_id: str, device_id: str | None) -> list[Bundle]:
        """Bundles of the user's devices with keys, oldest device first.

        Consumes one unused one-time prekey per device under a row lock, so no
        two calls, on any process, ever get the same one.
        """
        return await self._run(lambda c: keys.fetch_bundles(c, user_id, device_id))

    async def prekey_status(self, device_id: str) -> PrekeyStatus:
        return await self._run(lambda c: keys.prekey_status(c, device_id))

    # -- messages -----------------------------------------------------------
    async def enqueue(
        self,
        messages: Sequence[NewMessage],
        max_per_device: int,
        max_per_sender: int | None = None,
    ) -> list[Enqueued | QueueFull]:
        """Store a batch of messages in one transaction (group commit); see the port.

        Seqs are allocated under the messages lock, so they become visible in
        their order. Raises ValueError if a cap is below 1.
        """
        for name, cap in (("max_per_device", max_per_device), ("max_per_sender", max_per_sender)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be at least 1, not {cap}")
        batch = list(messages)  # a snapshot: the worker thread must not see it change
        lock = self._messages_lock
        return await self._run(
            lambda c: queue.enqueue(c, batch, max_per_device, max_per_sender, lock)
        )

    async def commit(
        self,
        acks: Sequence[tuple[str, Sequence[str]]],
        sends: Sequence[Outgoing],
        limits: QueueLimits,
    ) -> list[SendResult]:
        """Acks, then sends routed and stored: one transaction, a fixed number of statements."""
        pairs = [(device_id, list(ids)) for device_id, ids in acks]
        batch = list(sends)
        lock = self._messages_lock

        def work(c: Conn) -> list[SendResult]:
            queue.ack_many(c, pairs)
            if not batch:
                return []
            directory = accounts.resolve_users(c, sorted({s.to_username for s in batch}))
            refusals, messages = route_all(batch, directory)
            stored = (
                queue.enqueue(c, messages, limits.max_per_device, limits.max_per_sender, lock)
                if messages
                else []
            )
            return merge(refusals, stored)

        return await self._run(work)

    async def pending(self, device_id: str, after_seq: int, limit: int) -> list[QueuedMessage]:
        """Unacked messages for the device with ``seq > after_seq``, in order."""
        return await self._run(lambda c: queue.pending(c, device_id, after_seq, limit))

    async def ack(self, device_id: str, message_ids: Sequence[str]) -> int:
        """Forget the device's copies of these messages; return how many (unknown ids ignored)."""
        pairs = [(device_id, list(message_ids))]
        return await self._run(lambda c: queue.ack_many(c, pairs))

    async def ack_many(self, acks: Sequence[tuple[str, Sequence[str]]]) -> int:
        """Several devices' acks in one transaction and one statement."""
        pairs = [(device_id, list(ids)) for device_id, ids in acks]
        return await self._run(lambda c: queue.ack_many(c, pairs))

    async def queue_depths(self, limit: int) -> list[tuple[str, str, int]]:
        """The *limit* longest device queues: (device id, username, messages)."""
        return await self._run(lambda c: queue.queue_depths(c, limit))

    async def purge_expired(self, now: float) -> int:
        """Drop messages with ``expires_at <= now``; return how many queued copies went.

        Also forgets refresh hashes of expired or revoked sessions, deleted
        sessions' copies past their expiry, and expired username retirements.
        """

        def purge(c: Conn) -> int:
            accounts.purge_dead_sessions(c, now)
            lifecycle.purge_retired(c, now)
            return queue.purge_expired(c, now)

        return await self._run(purge)


def _open_pool(dsn: str, pool_size: int, timeout: float) -> tuple[ConnectionPool[Any], int]:
    """A full, migrated pool and the key of its schema's messages lock (blocking)."""
    lock_timeout_ms = max(1, round(timeout * 1000))

    def configure(conn: psycopg.Connection[Any]) -> None:
        # Every wait for a lock is bounded, like SQLite's busy_timeout.
        conn.execute(f"SET lock_timeout = {lock_timeout_ms:d}".encode())
        conn.commit()

    try:  # one plain connection first: its error says why (the pool's says only "timeout")
        psycopg.connect(dsn, **_connection_kwargs(dsn, timeout)).close()
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(_unreachable(dsn, exc)) from exc
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn,
        kwargs=_connection_kwargs(dsn, timeout),
        min_size=pool_size,
        max_size=pool_size,
        open=False,
        configure=configure,
        timeout=timeout,
        reconnect_timeout=RECONNECT_TIMEOUT,
        name="relay-store",
    )
    try:
        pool.open(wait=True, timeout=timeout)
        with pool.connection() as conn:
            migrate_to(conn)
            with conn.transaction():
                messages_lock = advisory_key("messages", current_schema(conn))
    except BaseException as exc:
        pool.close()
        if isinstance(exc, _UNAVAILABLE):
            raise StoreUnavailable(_unreachable(dsn, exc)) from exc
        raise
    return pool, messages_lock


def _unreachable(dsn: str, exc: BaseException) -> str:
    detail = _redacted(str(exc), _password(dsn))
    return f"cannot reach PostgreSQL at {describe_dsn(dsn)}: {detail}"


def _password(dsn: str) -> str | None:
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:  # unreadable: psycopg refuses it before connecting
        return None
    return None if password is None else str(password)


def _redacted(text: str, secret: str | None) -> str:
    """*text* on one line (libpq writes several), without *secret*."""
    text = "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return text.replace(secret, "[redacted]") if secret else text


def describe_dsn(dsn: str) -> str:
    """Where *dsn* points, without its password: ``user@host:port/dbname``."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unreadable DSN)"
    user = str(parts.get("user") or "")
    where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"
    return f"{user + '@' if user else ''}{where}/{parts.get('dbname') or user}"


@asynccontextmanager
async def open_postgres_store(
    dsn: str, *, pool_size: int = POOL_SIZE, timeout: float = TIMEOUT
) -> AsyncIterator[PostgresStore]:
    """Connect to the database at *dsn*, migrate its schema, and yield the store.

    The tables live in the DSN's first schema (its ``search_path``,
    ``public`` by default). *pool_size* connections are opened at once and
    kept; *timeout* bounds every wait for a connection or a lock.

    Raises :class:`StoreUnavailable` if PostgreSQL cannot be reached within
    *timeout*, and :class:`~relay.store._migrations.SchemaVersionError` if
    the schema was written by a newer relay. The store is closed on exit.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, not {pool_size}")
    pool, messages_lock = await trio.to_thread.run_sync(_open_pool, dsn, pool_size, timeout)
    store = PostgresStore(pool, pool_size, messages_lock, dsn)
    try:
        yield store
    finally:
        await store.aclose()


def migrate_postgres(
    dsn: str, target: int | None, timeout: float = TIMEOUT, *, allow_down: bool = True
) -> Migrated:
    """Take the database at *dsn* to schema version *target* (None: the latest). Blocking.

    For ``relay migrate``: one connection, one transaction (see
    :func:`~relay.store._postgres_migrations.migrate_to`, which also says
    what *allow_down* refuses). Raises :class:`StoreUnavailable` (the
    driver's words, without the password) if PostgreSQL cannot be reached or
    a lock is not granted within *timeout*.
    """
    try:
        with psycopg.connect(dsn, **_connection_kwargs(dsn, timeout)) as conn:
            conn.execute(f"SET lock_timeout = {max(1, round(timeout * 1000)):d}".encode())
            conn.commit()
            return migrate_to(conn, target, allow_down=allow_down)
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(_redacted(str(exc), _password(dsn))) from exc


if TYPE_CHECKING:

    def _implements_the_port(store: PostgresStore) -> Store:
        return store  # mypy fails here if PostgresStore drifts from the Store protocol
