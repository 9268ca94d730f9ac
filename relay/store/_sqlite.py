"""SQLite adapter of the Store port: the embedded default.

One ``sqlite3`` connection serves the whole process. It is only ever used
from Trio worker threads, through a ``CapacityLimiter(1)``, so calls run one
at a time and the event loop never waits on disk. The SQL itself lives in
``_sqlite_accounts``, ``_sqlite_keys`` and ``_sqlite_messages``; this module
owns the connection, the threads and the transactions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from ..config import Synchronous
from ..crypto import KeyUpload
from . import _sqlite_accounts as accounts
from . import _sqlite_keys as keys
from . import _sqlite_lifecycle as lifecycle
from . import _sqlite_messages as queue
from ._migrations import Migrated, migrate, migrate_to
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
    StoreError,
    StoreUnavailable,
    User,
    UserSummary,
)
from ._routing import merge, route_all

if TYPE_CHECKING:
    from ._port import Store

T = TypeVar("T")

BUSY_TIMEOUT = 5.0
"""Default seconds a statement waits for another process's lock before SQLITE_BUSY."""

_READ = "BEGIN"
# Writers take the write lock up front: a deferred transaction that reads and
# then writes can fail with SQLITE_BUSY midway (lock upgrade) instead of
# waiting, and read-then-write logic (key consumption) needs the lock anyway.
_WRITE = "BEGIN IMMEDIATE"


def _connect(
    path: str,
    synchronous: Synchronous | str = Synchronous.FULL,
    busy_timeout: float = BUSY_TIMEOUT,
) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module never opens or commits a
    # transaction behind our back; each store method states its own.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        # Before anything that takes a lock, switching to WAL included.
        conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000):d}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode not in ("wal", "memory"):
            raise StoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        # FULL (default): fsync the WAL on every commit, so an accepted
        # message survives a power loss too. NORMAL: the commit reaches the
        # OS (it survives kill -9 of the relay, not an OS crash) and fsync
        # happens at checkpoints: far less disk time per group commit.
        try:
            level = Synchronous(synchronous)  # the one list of levels: the config's enum
        except ValueError:
            raise StoreError(f"synchronous must be full or normal, got {synchronous!r}") from None
        # The value is one of the enum's own words, never the caller's text.
        conn.execute(f"PRAGMA synchronous = {level.value.upper()}")
        # Per connection and off by default; the cascades rely on it.
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        # From now on a lock held elsewhere fails a statement at once and
        # _transaction waits, promptly (see there), instead of SQLite.
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return conn


LOCK_POLL_FIRST = 50e-6
"""Seconds before the first retry of a transaction that met another process's lock."""
LOCK_POLL_MAX = 0.001
"""Longest pause between two tries (the pause doubles up to it)."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock this statement needs (any SQLITE_BUSY_* code)."""
    # Errors raised by the sqlite3 module itself (a bad UTF-8 column) carry no code.
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) == sqlite3.SQLITE_BUSY


def _transaction(
    conn: sqlite3.Connection,
    begin: str,
    fn: Callable[[sqlite3.Connection], T],
    busy_timeout: float,
) -> T:
    """*fn* in one transaction; retried whole while another process holds the lock.

    The store's connection has SQLite's busy timeout at 0, so a locked
    database fails a statement at once; the transaction is rolled back and
    tried again every 50 µs, doubling to 1 ms, until *busy_timeout* has
    passed (then the error is raised). SQLite's own busy handler sleeps 1, 2,
    5, 10, 15, 20, 25... ms between tries: relay processes sharing one file
    then slept past each other's releases while the holder took the lock
    again, committing in bursts with one of them starved. Nothing is done
    twice: a failed try rolled back whole. The waiting is in this worker
    thread, never on the event loop.
    """
    give_up: float | None = None
    pause = LOCK_POLL_FIRST
    while True:
        try:
            return _attempt(conn, begin, fn)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            now = time.monotonic()
            if give_up is None:
                give_up = now + busy_timeout
            elif now >= give_up:
                raise
        time.sleep(pause)
        pause = min(2 * pause, LOCK_POLL_MAX)


def _attempt(conn: sqlite3.Connection, begin: str, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute(begin)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (e.g. SQLITE_FULL) already rolled back.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SQLiteStore:
    """The :class:`~relay.store.Store` port over one SQLite file.

    Open it with :func:`open_sqlite_store`. Every method runs as one
    transaction in a worker thread (``BEGIN IMMEDIATE`` for writes, ``BEGIN``
    for reads) and is a Trio checkpoint.

    Cancellation: a call cancelled while waiting for its turn does nothing.
    Once its worker thread has started, the thread is not abandoned
    (``abandon_on_cancel=False``): the caller waits for it, so its
    transaction commits or rolls back as a whole, and the cancellation is
    delivered at the caller's next checkpoint. A committed write is never
    half-done, and never done behind a caller who was told it failed.

    A database that is locked by another process past ``busy_timeout``,
    full, or failing raises :class:`StoreUnavailable` (the transaction rolled
    back), as does any call after :meth:`aclose`.
    """

    def __init__(self, conn: sqlite3.Connection, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._busy_timeout = busy_timeout
        # One token: the connection is not safe for concurrent use, and
        # serialising here rather than on SQLite's lock keeps waiting on the
        # Trio side, where it is cancellable, instead of in a busy loop.
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, begin: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            # Checked under the limiter, so it cannot race with aclose().
            if self._conn is None:
                raise StoreUnavailable("the store is closed")
            try:
                return _transaction(self._conn, begin, fn, self._busy_timeout)
            except sqlite3.OperationalError as exc:  # locked, disk full, I/O error
                raise StoreUnavailable(str(exc)) from exc

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(_READ, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(_WRITE, fn)

    # -- health -----------------------------------------------------------
    async def ping(self) -> None:
        """Run ``SELECT 1``; raise if the database does not answer."""
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Close the connection once in-flight calls are done. Idempotent."""

        def close() -> None:
            if self._conn is not None:
                # The last connection to close checkpoints the WAL into the
                # main file and removes the -wal/-shm files.
                self._conn.close()
                self._conn = None

        # Shielded: closing from a cancelled scope (shutdown, a failed
        # `async with`) must still release the file.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close, limiter=self._limiter)

    # -- accounts ---------------------------------------------------------
    async def create_user(self, username: str, password_hash: bytes, now: float) -> User:
        """Create a user; raise :class:`UsernameTaken` if the name exists.

        The name is stored and compared exactly as given (callers case-fold).
        """
        return await self._write(lambda c: accounts.create_user(c, username, password_hash, now))

    async def get_user(self, user_id: str) -> User | None:
        return await self._read(lambda c: accounts.get_user(c, user_id))

    async def get_user_by_name(self, username: str) -> User | None:
        return await self._read(lambda c: accounts.get_user_by_name(c, username))

    async def list_users(self) -> list[UserSummary]:
        return await self._read(lifecycle.list_users)

    async def set_password(self, user_id: str, password_hash: bytes) -> bool:
        return await self._write(lambda c: lifecycle.set_password(c, user_id, password_hash))

    async def delete_user(
        self, user_id: str, now: float, retire_until: float
    ) -> list[str] | None:
        """Delete the account and all that is its; see the port. One transaction."""
        return await self._write(lambda c: lifecycle.delete_user(c, user_id, now, retire_until))

    # -- devices ----------------------------------------------------------
    async def create_device(self, user_id: str, name: str, now: float) -> Device:
        """Create a device seen at *now*; raise :class:`StoreError` for an unknown user."""
        return await self._write(lambda c: accounts.create_device(c, user_id, name, now))

    async def get_device(self, device_id: str) -> Device | None:
        return await self._read(lambda c: accounts.get_device(c, device_id))

    async def list_devices(self, user_id: str) -> list[Device]:
        """The user's devices, oldest first."""
        return await self._read(lambda c: accounts.list_devices(c, user_id))

    async def resolve_users(self, usernames: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        names = list(usernames)
        return await self._read(lambda c: accounts.resolve_users(c, names))

    async def count_devices(self, user_id: str) -> int:
        return await self._read(lambda c: accounts.count_devices(c, user_id))

    async def delete_device(self, user_id: str, device_id: str, now: float) -> list[str] | None:
        """Delete the device with its keys, queued messages and sessions.

        Returns the ids of the sessions that were active on it at *now*, or
        None if the user has no such device. Its live sessions still appear
        in :meth:`revoked_since` (revoked at *now*) until they expire.
        """
        def work(c: sqlite3.Connection) -> list[str] | None:
            copies = queue.queued_seqs(c, device_id)
            active = accounts.delete_device(c, user_id, device_id, now)
            if active is not None:
                queue.forget_delivered(c, copies)
            return active

        return await self._write(work)

    # -- sessions ---------------------------------------------------------
    async def create_session(
        self, user_id: str, device_id: str, refresh_hash: bytes, now: float, expires_at: float
    ) -> Session:
        """Create a session whose current refresh token is *refresh_hash*.

        Raises :class:`StoreError` if the user has no such device.
        """
        return await self._write(
            lambda c: accounts.create_session(c, user_id, device_id, refresh_hash, now, expires_at)
        )

    async def get_session(self, session_id: str) -> Session | None:
        return await self._read(lambda c: accounts.get_session(c, session_id))

    async def list_sessions(self, user_id: str, now: float) -> list[Session]:
        """The user's active sessions on all devices, oldest first."""
        return await self._read(lambda c: accounts.list_sessions(c, user_id, now))

    async def rotate_refresh(
        self,
        old_hash: bytes,
        new_hash: bytes,
        now: float,
        expires_at: float,
        max_age: float | None = None,
    ) -> RefreshResult:
        """Spend *old_hash* and make *new_hash* the session's refresh token.

        ROTATED also sets the session's ``expires_at`` (capped at
        ``created_at + max_age``) and ``last_used_at``. A spent hash of a live
        session revokes it (REUSED); an unknown hash, or one whose session is
        revoked, expired or older than *max_age*, is INVALID.
        """
        return await self._write(
            lambda c: accounts.rotate_refresh(c, old_hash, new_hash, now, expires_at, max_age)
        )

    async def revoke_session(
        self, session_id: str, now: float, user_id: str | None = None
    ) -> Session | None:
        """Revoke the active session (of *user_id*, if given); return it as it was."""
        return await self._write(lambda c: accounts.revoke_session(c, session_id, now, user_id))

    async def revoke_user_sessions(
        self, user_id: str, now: float, keep: str | None = None
    ) -> list[str]:
        """Revoke every active session of the user except *keep*; their ids."""
        return await self._write(lambda c: lifecycle.revoke_user_sessions(c, user_id, now, keep))

    async def revoked_since(self, since: float) -> list[Session]:
        """Sessions revoked at or after *since*, oldest revocation first."""
        return await self._read(lambda c: accounts.revoked_since(c, since))

    async def touch_session(self, session_id: str, now: float) -> None:
        """Record use of an active session and its device; ignore dead sessions."""
        await self._write(lambda c: accounts.touch_session(c, session_id, now))

    # -- keys ---------------------------------------------------------------
    async def put_keys(self, device_id: str, upload: KeyUpload, now: float) -> PutKeysResult:
        """Store the device's bundle in one transaction (all or nothing).

        A different identity key replaces the whole bundle. Otherwise the
        signed prekey is replaced (uploaded at *now*) and the one-time
        prekeys are added; an id already uploaded under this identity key,
        used or not, or repeated in the upload, raises :class:`KeyIdReused`.
        """
        return await self._write(lambda c: keys.put_keys(c, device_id, upload, now))

    async def fetch_bundles(self, user_id: str, device_id: str | None) -> list[Bundle]:
        """Bundles of the user's devices with keys, oldest device first.

        Consumes each device's lowest unused one-time prekey under the write
        lock, so no two calls (or processes) ever get the same one.
        """
        return await self._write(lambda c: keys.fetch_bundles(c, user_id, device_id))

    async def prekey_status(self, device_id: str) -> PrekeyStatus:
        return await self._read(lambda c: keys.prekey_status(c, device_id))

    # -- messages -----------------------------------------------------------
    async def enqueue(
        self,
        messages: Sequence[NewMessage],
        max_per_device: int,
        max_per_sender: int | None = None,
    ) -> list[Enqueued | QueueFull]:
        """Store a batch of messages in one transaction (group commit).

        Messages are applied in order, as if enqueued one by one; a target
        device that no longer exists gets no copy; a full target queue
        refuses the message (:class:`QueueFull`). Raises ValueError if a cap
        is below 1.
        """
        for name, cap in (("max_per_device", max_per_device), ("max_per_sender", max_per_sender)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be at least 1, not {cap}")
        batch = list(messages)  # a snapshot: the worker thread must not see it change
        return await self._write(
            lambda c: queue.enqueue(c, batch, max_per_device, max_per_sender)
        )

    async def commit(
        self,
        acks: Sequence[tuple[str, Sequence[str]]],
        sends: Sequence[Outgoing],
        limits: QueueLimits,
    ) -> list[SendResult]:
        """Acks, then sends routed and stored, in one BEGIN IMMEDIATE transaction."""
        pairs = [(device_id, list(ids)) for device_id, ids in acks]
        batch = list(sends)

        def work(c: sqlite3.Connection) -> list[SendResult]:
            queue.ack_many(c, pairs)
            if not batch:
                return []
            directory = accounts.resolve_users(c, sorted({s.to_username for s in batch}))
            refusals, messages = route_all(batch, directory)
            stored = (
                queue.enqueue(c, messages, limits.max_per_device, limits.max_per_sender)
                if messages
                else []
            )
            return merge(refusals, stored)

        return await self._write(work)

    async def pending(self, device_id: str, after_seq: int, limit: int) -> list[QueuedMessage]:
        """Unacked messages for the device with ``seq > after_seq``, in order."""
        return await self._read(lambda c: queue.pending(c, device_id, after_seq, limit))

    async def ack(self, device_id: str, message_ids: Sequence[str]) -> int:
        """Forget the device's copies of these messages; return how many.

        Unknown ids, and ids of messages not queued for the device, are ignored.
        """
        ids = list(message_ids)
        return await self._write(lambda c: queue.ack_many(c, [(device_id, ids)]))

    async def ack_many(self, acks: Sequence[tuple[str, Sequence[str]]]) -> int:
        """Several devices' acks in one transaction (one commit for a batch)."""
        pairs = [(device_id, list(ids)) for device_id, ids in acks]

        return await self._write(lambda c: queue.ack_many(c, pairs))

    async def queue_depths(self, limit: int) -> list[tuple[str, str, int]]:
        """The *limit* longest device queues: (device id, username, messages)."""
        return await self._read(lambda c: queue.queue_depths(c, limit))

    async def purge_expired(self, now: float) -> int:
        """Drop messages with ``expires_at <= now``; return how many queued copies went.

        Also forgets refresh hashes of expired or revoked sessions and the
        copies of deleted sessions past their expiry (nothing can use them).
        """

        def purge(c: sqlite3.Connection) -> int:
            accounts.purge_dead_sessions(c, now)
            lifecycle.purge_retired(c, now)
            return queue.purge_expired(c, now)

        return await self._write(purge)


@asynccontextmanager
async def open_sqlite_store(
    path: str,
    synchronous: Synchronous | str = Synchronous.FULL,
    busy_timeout: float = BUSY_TIMEOUT,
) -> AsyncIterator[SQLiteStore]:
    """Open (creating if need be) and migrate the database at *path*.

    *busy_timeout* is how long a write waits for another process's lock
    before it fails (and the caller's operation with it).
    *synchronous* is SQLite's durability level for commits: ``"full"``
    (survives power loss) or ``"normal"`` (survives a crash of the relay).

    Raises :class:`~relay.store._migrations.SchemaVersionError` if the file
    was written by a newer relay. The store is closed on exit.
    """
    # Opening touches the disk (and may migrate): a worker thread too.
    try:
        conn = await trio.to_thread.run_sync(_connect, path, synchronous, busy_timeout)
    except sqlite3.OperationalError as exc:  # no such directory, no permission, locked
        raise StoreUnavailable(f"cannot open it: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # not a database, or a corrupt one
        raise StoreError(f"cannot open it: {exc}") from exc
    store = SQLiteStore(conn, busy_timeout)
    try:
        yield store
    finally:
        await store.aclose()


def migrate_sqlite(
    path: str,
    target: int | None,
    busy_timeout: float = BUSY_TIMEOUT,
    *,
    allow_down: bool = True,
) -> Migrated:
    """Take the existing database at *path* to schema version *target* (None: the latest).

    For ``relay migrate``; blocking. One ``BEGIN IMMEDIATE`` transaction (see
    :func:`~relay.store._migrations.migrate_to`, which also says what
    *allow_down* refuses). Never creates a file: a missing one raises
    :class:`StoreError`, and a database locked past *busy_timeout* raises
    :class:`StoreUnavailable`.
    """
    try:
        # mode=rw: an existing file only, never a new empty one.
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=rw", uri=True, isolation_level=None
        )
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{path}: cannot open it ({exc})") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000):d}")
        return migrate_to(conn, target, allow_down=allow_down)
    except sqlite3.OperationalError as exc:  # locked, disk full, I/O error
        raise StoreUnavailable(str(exc)) from exc
    finally:
        conn.close()


if TYPE_CHECKING:

    def _implements_the_port(store: SQLiteStore) -> Store:
        return store  # mypy fails here if SQLiteStore drifts from the Store protocol
