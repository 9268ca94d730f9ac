"""Schema migrations of the SQLite store, versioned in code.

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; the
database's ``PRAGMA user_version`` records how many have run. Migrations are
append-only: never edit one that has shipped, add a new one.

:func:`migrate` runs the missing ones in a single ``BEGIN IMMEDIATE``
transaction, reading the version only once it holds the write lock, so two
processes opening the same file cannot both apply a migration, and a failure
leaves the file at its previous version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from ._port import StoreError


class SchemaVersionError(StoreError):
    """The database was written by a newer relay than this one."""


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

# v2: each queued copy knows its sender, so that a per-sender share of a
# device's queue can be enforced with one indexed count.
_V2 = """
ALTER TABLE queue ADD COLUMN sender_user_id TEXT NOT NULL DEFAULT '';
UPDATE queue SET sender_user_id =
    (SELECT m.sender_user_id FROM messages AS m WHERE m.seq = queue.seq);
CREATE INDEX queue_by_sender ON queue(device_id, sender_user_id);
"""

# v3: usernames of deleted accounts, not to be registered again before `until`.
_V3 = """
CREATE TABLE retired_usernames (
    username TEXT PRIMARY KEY,
    until    REAL NOT NULL
) WITHOUT ROWID;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
"""Ordered scripts; the schema version is the number applied."""

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations; return the resulting version.

    *conn* must be in autocommit mode (``isolation_level=None``). Idempotent:
    on an up-to-date database it changes nothing. Raises
    :class:`SchemaVersionError` if the database is newer than this code.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        if current > LATEST_VERSION:
            raise SchemaVersionError(
                f"database schema version {current} is newer than the latest this relay "
                f"knows ({LATEST_VERSION}); upgrade relay or use another database file"
            )
        for version in range(current + 1, LATEST_VERSION + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            # PRAGMA takes no parameters; version is our own int.
            conn.execute(f"PRAGMA user_version = {version:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION


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
