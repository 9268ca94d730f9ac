"""Schema migrations of the PostgreSQL store: the same versions as SQLite's.

The scripts mirror ``_migrations.MIGRATIONS`` version for version (what
each version adds is the same; the types are PostgreSQL's). The version is
the one row of ``relay_schema``, a table the runner owns (no migration
creates or drops it). :func:`migrate_to` runs in one transaction — DDL is
transactional in PostgreSQL — under an advisory lock, so two relays starting
together on one database migrate one after the other, and the second finds
nothing to do.

Types: times are ``double precision`` (Python floats, exactly); ids and
usernames are ``text COLLATE "C"``, compared and ordered byte by byte like
SQLite's, whatever the database's collation; client ids, message bodies and
device names are ``bytea`` (their UTF-8), because PostgreSQL text cannot
hold a NUL character and a client may send one. ``ord`` columns (an
identity) break ``created_at`` ties in insertion order, as SQLite's rowid.
"""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from ._locks import advisory_key
from ._migrations import MIGRATIONS as SQLITE_MIGRATIONS
from ._migrations import Migrated, Migration, check_direction, plan
from ._port import StoreError

_V1 = """
CREATE TABLE users (
    id            text COLLATE "C" PRIMARY KEY,
    username      text COLLATE "C" NOT NULL UNIQUE,  -- callers case-fold; stored as given
    password_hash bytea NOT NULL,
    created_at    double precision NOT NULL
);

CREATE TABLE devices (
    id           text COLLATE "C" PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         bytea NOT NULL,
    created_at   double precision NOT NULL,
    last_seen_at double precision NOT NULL,
    ord          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX devices_by_user ON devices(user_id, created_at, ord);

CREATE TABLE sessions (
    id           text COLLATE "C" PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id    text COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    created_at   double precision NOT NULL,
    last_used_at double precision NOT NULL,
    expires_at   double precision NOT NULL,
    revoked_at   double precision,
    ord          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at, ord);
CREATE INDEX sessions_by_device ON sessions(device_id);
CREATE INDEX sessions_by_revoked_at ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    hash       bytea PRIMARY KEY,
    session_id text COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    spent      boolean NOT NULL DEFAULT false
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE deleted_sessions (
    id           text COLLATE "C" PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL,
    device_id    text COLLATE "C" NOT NULL,
    created_at   double precision NOT NULL,
    last_used_at double precision NOT NULL,
    expires_at   double precision NOT NULL,
    revoked_at   double precision NOT NULL
);
CREATE INDEX deleted_sessions_by_revoked_at ON deleted_sessions(revoked_at);
CREATE INDEX deleted_sessions_by_expiry ON deleted_sessions(expires_at);

CREATE TABLE device_keys (
    device_id                 text COLLATE "C" PRIMARY KEY
                              REFERENCES devices(id) ON DELETE CASCADE,
    identity_key              bytea NOT NULL,
    signed_prekey_id          bigint NOT NULL,
    signed_prekey             bytea NOT NULL,
    signed_prekey_signature   bytea NOT NULL,
    signed_prekey_uploaded_at double precision NOT NULL
);

CREATE TABLE one_time_prekeys (
    device_id  text COLLATE "C" NOT NULL REFERENCES device_keys(device_id) ON DELETE CASCADE,
    key_id     bigint NOT NULL,
    public_key bytea NOT NULL,
    used       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (device_id, key_id)
);
CREATE INDEX one_time_prekeys_unused ON one_time_prekeys(device_id, key_id) WHERE NOT used;

-- seq comes from this sequence, only ever under the message lock (see
-- _postgres_messages): values are never reused, and commit in their order.
CREATE SEQUENCE messages_seq AS bigint;
CREATE TABLE messages (
    seq               bigint PRIMARY KEY,
    message_id        text COLLATE "C" NOT NULL UNIQUE,
    sender_user_id    text COLLATE "C" NOT NULL,
    sender_device_id  text COLLATE "C" NOT NULL,
    sender_username   text COLLATE "C" NOT NULL,
    client_id         bytea NOT NULL,
    recipient_user_id text COLLATE "C" NOT NULL,
    target_device_ids jsonb NOT NULL,  -- to answer duplicates
    body              bytea NOT NULL,
    sent_at           double precision NOT NULL,
    expires_at        double precision NOT NULL,
    UNIQUE (sender_device_id, client_id)
);
ALTER SEQUENCE messages_seq OWNED BY messages.seq;
CREATE INDEX messages_by_expiry ON messages(expires_at);

CREATE TABLE queue (
    device_id text COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    seq       bigint NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX queue_by_seq ON queue(seq);
"""

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

_V2 = """
ALTER TABLE queue ADD COLUMN sender_user_id text COLLATE "C" NOT NULL DEFAULT '';
UPDATE queue SET sender_user_id = m.sender_user_id FROM messages AS m WHERE m.seq = queue.seq;
CREATE INDEX queue_by_sender ON queue(device_id, sender_user_id);
"""

_V2_DOWN = """
DROP INDEX queue_by_sender;
ALTER TABLE queue DROP COLUMN sender_user_id;
"""

_V3 = """
CREATE TABLE retired_usernames (
    username text COLLATE "C" PRIMARY KEY,
    until    double precision NOT NULL
);
"""

_V3_DOWN = """
DROP TABLE retired_usernames;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, SQLITE_MIGRATIONS[0].summary, _V1, _V1_DOWN),
    Migration(2, SQLITE_MIGRATIONS[1].summary, _V2, _V2_DOWN),
    Migration(3, SQLITE_MIGRATIONS[2].summary, _V3, _V3_DOWN),
)
"""Ordered migrations, one per SQLite migration, under the same numbers."""

LATEST_VERSION = len(MIGRATIONS)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS relay_schema (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),  -- a single row
    version integer NOT NULL
)
"""

Conn = Connection[Any]


def current_schema(conn: Conn) -> str:
    """The schema relay's tables live in (the first of the DSN's search_path that exists)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise StoreError(
            "no schema to keep relay's tables in: the search_path of store.dsn names "
            "no existing schema (create it, or fix the DSN's options)"
        )
    return str(row[0])


def schema_version(conn: Conn) -> int:
    """The schema's version; 0 for a schema relay has never touched."""
    exists = conn.execute("SELECT to_regclass('relay_schema') IS NOT NULL").fetchone()
    if exists is None or not exists[0]:
        return 0
    row = conn.execute("SELECT version FROM relay_schema").fetchone()
    return 0 if row is None else int(row[0])


def migrate_to(conn: Conn, target: int | None = None, *, allow_down: bool = True) -> Migrated:
    """Take the schema to version *target* (None: the latest), up or down.

    One transaction, under an advisory lock of this schema: every step and
    the version number commit together, or nothing changes. *conn* must be
    idle (no transaction open). Raises
    :class:`~relay.store._migrations.SchemaVersionError` if the schema is
    newer than this code, ValueError for an unknown *target*, and
    :class:`~relay.store._migrations.DownNotConfirmed` for a way down without
    *allow_down*.
    """
    with conn.transaction():
        key = advisory_key("migrate", current_schema(conn))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        current = schema_version(conn)
        steps = plan(current, target, MIGRATIONS)
        check_direction(current, steps, allow_down)
        if steps:
            if current == 0:
                conn.execute(_VERSION_TABLE)
            for step in steps:
                # No parameters: psycopg sends the script as one simple query.
                conn.execute(step.script.encode())
            after = steps[-1].version_after
            conn.execute(
                "INSERT INTO relay_schema (version) VALUES (%s)"
                " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
                (after,),
            )
    return Migrated(current, steps[-1].version_after if steps else current, tuple(steps))
