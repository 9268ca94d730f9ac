"""Schema migrations, versioned in code and reversible; the SQLite store's scripts.

Each engine has its own scripts (this module for SQLite,
``_postgres_migrations`` for PostgreSQL) under the same version numbers:
``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1`` (``up``)
and back (``down``). Migrations are append-only: never edit one that has
shipped, add a new one. A down step drops what its up step added, data
included; the data of the versions that remain is kept.

:func:`plan` decides which steps lead from one version to another (pure);
each engine's ``migrate_to`` runs them in a single transaction together
with the new version number, so a failure leaves the database at its
previous version, and a database newer than the code is refused whole.

SQLite records the version in ``PRAGMA user_version``. :func:`migrate_to`
reads it only once it holds the write lock (``BEGIN IMMEDIATE``), so two
processes opening the same file cannot both apply a migration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ._port import StoreError


class SchemaVersionError(StoreError):
    """The database was written by a newer relay than this one."""


class DownNotConfirmed(StoreError):
    """Going down would drop what later versions added, and the caller did not allow it.

    Nothing changed; ``planned`` is what would have run.
    """

    def __init__(self, planned: Migrated) -> None:
        super().__init__(f"going down from {planned.before} to {planned.after} drops data")
        self.planned = planned


@dataclass(frozen=True, slots=True)
class Migration:
    """One version of the schema: what it adds (``up``) and how to take it away (``down``)."""

    version: int
    summary: str  # what the version adds, for operators ("usernames of deleted accounts")
    up: str
    down: str


@dataclass(frozen=True, slots=True)
class Step:
    """One script to run: *migration*'s up (``up`` True) or down step."""

    migration: Migration
    up: bool

    @property
    def script(self) -> str:
        return self.migration.up if self.up else self.migration.down

    @property
    def version_after(self) -> int:
        return self.migration.version if self.up else self.migration.version - 1

    def __str__(self) -> str:
        direction = "up" if self.up else "down"
        return f"{direction} {self.migration.version} ({self.migration.summary})"


@dataclass(frozen=True, slots=True)
class Migrated:
    """What a migration run found and did."""

    before: int
    after: int
    steps: tuple[Step, ...]

    def describe(self) -> str:
        """One line: the steps run, or that there was nothing to do."""
        if not self.steps:
            return f"nothing to do: the schema is at version {self.after}"
        return "ran " + ", ".join(str(step) for step in self.steps)


def check_direction(current: int, steps: Sequence[Step], allow_down: bool) -> None:
    """Raise :class:`DownNotConfirmed` for downward *steps* unless *allow_down*."""
    if steps and not steps[0].up and not allow_down:
        raise DownNotConfirmed(Migrated(current, steps[-1].version_after, tuple(steps)))


def plan(current: int, target: int | None, migrations: Sequence[Migration]) -> list[Step]:
    """The steps from version *current* to *target* (None: the latest), in order.

    Raises :class:`SchemaVersionError` if *current* is newer than the latest
    version known (this code cannot know how to go down from it), and
    ValueError if *target* is not a version this code knows (0 is the empty
    schema).
    """
    latest = len(migrations)
    if current > latest:
        raise SchemaVersionError(
            f"database schema version {current} is newer than the latest this relay "
            f"knows ({latest}); upgrade relay or use another database"
        )
    if target is None:
        target = latest
    if not 0 <= target <= latest:
        raise ValueError(f"no schema version {target}: this relay knows 0 to {latest}")
    if target >= current:
        return [Step(migrations[v - 1], up=True) for v in range(current + 1, target + 1)]
    return [Step(migrations[v - 1], up=False) for v in range(current, target, -1)]


# -- SQLite -----------------------------------------------------------------------

_V1 = """
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,  -- callers case-fold; stored as given
    password_hash BLOB NOT NULL,
    created_at    REAL NOT NULL
);

-- Rowid table on purpose: rowid breaks created_at ties in insertion order.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL
);
CREATE INDEX devices_by_user ON devices(user_id, created_at);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    created_at   REAL NOT NULL,
    last_used_at REAL NOT NULL,
    expires_at   REAL NOT NULL,
    revoked_at   REAL
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
CREATE INDEX sessions_by_device ON sessions(device_id);
CREATE INDEX sessions_by_revoked_at ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh hash a session ever had: the current one (spent = 0) and
-- the spent ones, which are kept so that presenting one again is detected.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    spent      INTEGER NOT NULL DEFAULT 0 CHECK (spent IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

-- Sessions deleted with their device, kept until they expire so that
-- revoked_since() still reports them when revocation lists are rebuilt.
CREATE TABLE deleted_sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_used_at REAL NOT NULL,
    expires_at   REAL NOT NULL,
    revoked_at   REAL NOT NULL
);
CREATE INDEX deleted_sessions_by_revoked_at ON deleted_sessions(revoked_at);
CREATE INDEX deleted_sessions_by_expiry ON deleted_sessions(expires_at);

CREATE TABLE device_keys (
    device_id                 TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    identity_key              BLOB NOT NULL,
    signed_prekey_id          INTEGER NOT NULL,
    signed_prekey             BLOB NOT NULL,
    signed_prekey_signature   BLOB NOT NULL,
    signed_prekey_uploaded_at REAL NOT NULL
);

-- Consumed keys stay (used = 1) as the record of ids that must not be
-- uploaded again under the same identity key.
CREATE TABLE one_time_prekeys (
    device_id  TEXT NOT NULL REFERENCES device_keys(device_id) ON DELETE CASCADE,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),
    PRIMARY KEY (device_id, key_id)
) WITHOUT ROWID;
CREATE INDEX one_time_prekeys_unused ON one_time_prekeys(device_id, key_id) WHERE used = 0;

-- AUTOINCREMENT so that seq is never reused after the newest rows are
-- purged: clients resume with "after_seq" and must never miss a message.
-- No foreign key on the sender: its messages outlive a deleted device.
CREATE TABLE messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id        TEXT NOT NULL UNIQUE,
    sender_user_id    TEXT NOT NULL,
    sender_device_id  TEXT NOT NULL,
    sender_username   TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    recipient_user_id TEXT NOT NULL,
    target_device_ids TEXT NOT NULL,  -- JSON array, to answer duplicates
    body              TEXT NOT NULL,
    sent_at           REAL NOT NULL,
    expires_at        REAL NOT NULL,
    UNIQUE (sender_device_id, client_id)
);
CREATE INDEX messages_by_expiry ON messages(expires_at);

-- One row per undelivered copy.
CREATE TABLE queue (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE INDEX queue_by_seq ON queue(seq);
"""

# Children before parents, so that no foreign key ever points at a dropped table.
_V1_DOWN = """
DROP TABLE queue;
DROP TABLE messages;
DROP TABLE one_time_prekeys;
DROP TABLE device_keys;
DROP TABLE deleted_sessions;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE devices;
DROP TABLE users;
"""

# v2: each queued copy knows its sender, so that a per-sender share of a
# device's queue can be enforced with one indexed count.
_V2 = """
ALTER TABLE queue ADD COLUMN sender_user_id TEXT NOT NULL DEFAULT '';
UPDATE queue SET sender_user_id =
    (SELECT m.sender_user_id FROM messages AS m WHERE m.seq = queue.seq);
CREATE INDEX queue_by_sender ON queue(device_id, sender_user_id);
"""

# SQLite (3.35+) drops a column only once no index uses it. Going up again
# refills it from the messages, so nothing is lost for good.
_V2_DOWN = """
DROP INDEX queue_by_sender;
ALTER TABLE queue DROP COLUMN sender_user_id;
"""

# v3: usernames of deleted accounts, not to be registered again before `until`.
_V3 = """
CREATE TABLE retired_usernames (
    username TEXT PRIMARY KEY,
    until    REAL NOT NULL
) WITHOUT ROWID;
"""

_V3_DOWN = """
DROP TABLE retired_usernames;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, devices, sessions, keys, messages", _V1, _V1_DOWN),
    Migration(2, "per-sender queue shares", _V2, _V2_DOWN),
    Migration(3, "usernames of deleted accounts", _V3, _V3_DOWN),
)
"""Ordered migrations; the schema version is the number applied."""

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate_to(
    conn: sqlite3.Connection, target: int | None = None, *, allow_down: bool = True
) -> Migrated:
    """Take the database to version *target* (None: the latest), up or down.

    One ``BEGIN IMMEDIATE`` transaction: every step and the version number
    commit together, or nothing changes. *conn* must be in autocommit mode
    (``isolation_level=None``). Raises :class:`SchemaVersionError` if the
    database is newer than this code, ValueError for an unknown *target*,
    and :class:`DownNotConfirmed` for a way down without *allow_down*.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        steps = plan(current, target, MIGRATIONS)
        check_direction(current, steps, allow_down)
        for step in steps:
            for statement in _statements(step.script):
                conn.execute(statement)
            # PRAGMA takes no parameters; the version is our own int.
            conn.execute(f"PRAGMA user_version = {step.version_after:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Migrated(current, steps[-1].version_after if steps else current, tuple(steps))


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations; return the resulting (latest) version.

    Idempotent: on an up-to-date database it changes nothing. Raises
    :class:`SchemaVersionError` if the database is newer than this code.
    """
    return migrate_to(conn).after


def _statements(script: str) -> Iterator[str]:
    """Split *script* into single statements.

    ``executescript`` would do this, but on Python 3.11 it commits any open
    transaction first, which would split a migration from its version bump.
    ``complete_statement`` knows about quotes and trigger bodies, so a ``;``
    only ends a statement where SQLite agrees it does.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statement = pending.strip()
            pending = ""
            if statement != ";":
                yield statement
    # The last split piece gets a spurious ";" appended; anything but
    # whitespace left over is an unterminated statement.
    if pending.rstrip(";").strip():
        raise ValueError(f"unterminated SQL statement in migration: {pending[:80]!r}")
