"""Users, devices and sessions of the SQLite store.

Plain synchronous functions over a :class:`sqlite3.Connection`, each run by
:class:`~relay.store._sqlite.SQLiteStore` inside one transaction on its
worker thread; they never begin or end transactions themselves.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ._port import (
    Device,
    RefreshOutcome,
    RefreshResult,
    Session,
    StoreError,
    User,
    UsernameTaken,
)


def new_id() -> str:
    """An opaque, unguessable id (128 random bits)."""
    return secrets.token_hex(16)


# -- users ---------------------------------------------------------------


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], username=row[1], password_hash=bytes(row[2]), created_at=row[3])


def create_user(conn: sqlite3.Connection, username: str, password_hash: bytes, now: float) -> User:
    # Checked first for a clean error; the UNIQUE constraint still backs it.
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
        raise UsernameTaken(username)
    retired = conn.execute(
        "SELECT 1 FROM retired_usernames WHERE username = ? AND until > ?", (username, now)
    ).fetchone()
    if retired is not None:
        raise UsernameTaken(username)  # a deleted account's name, still quarantined
    user = User(id=new_id(), username=username, password_hash=password_hash, created_at=now)
    conn.execute(
        "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (user.id, user.username, user.password_hash, user.created_at),
    )
    return user


def get_user(conn: sqlite3.Connection, user_id: str) -> User | None:
    row = conn.execute(
        "SELECT id, username, password_hash, created_at FROM users WHERE id = ?",
        (user_id,),
    ).fetchone()
    return None if row is None else _user(row)


def get_user_by_name(conn: sqlite3.Connection, username: str) -> User | None:
    row = conn.execute(
        "SELECT id, username, password_hash, created_at FROM users WHERE username = ?",
        (username,),
    ).fetchone()
    return None if row is None else _user(row)


# -- devices -------------------------------------------------------------


def _device(row: Sequence[Any]) -> Device:
    return Device(id=row[0], user_id=row[1], name=row[2], created_at=row[3], last_seen_at=row[4])


def create_device(conn: sqlite3.Connection, user_id: str, name: str, now: float) -> Device:
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
        raise StoreError(f"no such user: {user_id}")
    device = Device(id=new_id(), user_id=user_id, name=name, created_at=now, last_seen_at=now)
    conn.execute(
        "INSERT INTO devices (id, user_id, name, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?)",
        (device.id, device.user_id, device.name, device.created_at, device.last_seen_at),
    )
    return device


def get_device(conn: sqlite3.Connection, device_id: str) -> Device | None:
    row = conn.execute(
        "SELECT id, user_id, name, created_at, last_seen_at FROM devices WHERE id = ?",
        (device_id,),
    ).fetchone()
    return None if row is None else _device(row)


def list_devices(conn: sqlite3.Connection, user_id: str) -> list[Device]:
    rows = conn.execute(
        "SELECT id, user_id, name, created_at, last_seen_at FROM devices WHERE user_id = ?"
        " ORDER BY created_at, rowid",
        (user_id,),
    ).fetchall()
    return [_device(r) for r in rows]


def resolve_users(
    conn: sqlite3.Connection, usernames: Sequence[str]
) -> dict[str, tuple[str, list[str]]]:
    rows = conn.execute(
        "SELECT u.username, u.id, d.id FROM users AS u LEFT JOIN devices AS d ON d.user_id = u.id"
        " WHERE u.username IN (SELECT value FROM json_each(?)) ORDER BY d.created_at, d.rowid",
        (json.dumps(list(usernames)),),
    ).fetchall()
    found: dict[str, tuple[str, list[str]]] = {}
    for username, user_id, device_id in rows:
        entry = found.setdefault(username, (user_id, []))
        if device_id is not None:
            entry[1].append(device_id)
    return found


def count_devices(conn: sqlite3.Connection, user_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM devices WHERE user_id = ?", (user_id,)).fetchone()
    return int(row[0])


def delete_device(
    conn: sqlite3.Connection, user_id: str, device_id: str, now: float
) -> list[str] | None:
    owned = conn.execute(
        "SELECT 1 FROM devices WHERE id = ? AND user_id = ?", (device_id, user_id)
    ).fetchone()
    if owned is None:
        return None
    active = retire_sessions(conn, "device_id", device_id, now)
    # ON DELETE CASCADE takes the sessions (and their refresh tokens), the
    # keys and the queued copies with it.
    conn.execute("DELETE FROM devices WHERE id = ?", (device_id,))
    return active


# Built once, at import, from the two column names below: no input ever
# reaches the SQL text.
_ACTIVE_SESSIONS = {
    column: f"SELECT id FROM sessions WHERE {column} = ? AND revoked_at IS NULL"  # noqa: S608
    " AND expires_at > ? ORDER BY created_at, rowid"
    for column in ("device_id", "user_id")
}
_KEEP_REVOKED_COPIES = {
    column: "INSERT OR REPLACE INTO deleted_sessions"  # noqa: S608
    " (id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at)"
    " SELECT id, user_id, device_id, created_at, last_used_at, expires_at,"
    f" coalesce(revoked_at, ?) FROM sessions WHERE {column} = ?"
    " AND (revoked_at IS NOT NULL OR expires_at > ?)"
    for column in ("device_id", "user_id")
}


def retire_sessions(
    conn: sqlite3.Connection, column: str, value: str, now: float
) -> list[str]:
    """Before sessions are deleted (with their device or user, by *column*): their active ids.

    Deleting the rows would make these sessions vanish from revoked_since(),
    so a revocation list rebuilt after a restart would forget them while
    their access tokens are still valid: keep a revoked copy until expiry.
    """
    active = [str(r[0]) for r in conn.execute(_ACTIVE_SESSIONS[column], (value, now))]
    conn.execute(_KEEP_REVOKED_COPIES[column], (now, value, now))
    return active


# -- sessions ------------------------------------------------------------


def _session(row: Sequence[Any]) -> Session:
    return Session(
        id=row[0],
        user_id=row[1],
        device_id=row[2],
        created_at=row[3],
        last_used_at=row[4],
        expires_at=row[5],
        revoked_at=row[6],
    )


def create_session(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    refresh_hash: bytes,
    now: float,
    expires_at: float,
) -> Session:
    owned = conn.execute(
        "SELECT 1 FROM devices WHERE id = ? AND user_id = ?", (device_id, user_id)
    ).fetchone()
    if owned is None:
        raise StoreError(f"user {user_id} has no device {device_id}")
    session = Session(
        id=new_id(),
        user_id=user_id,
        device_id=device_id,
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        revoked_at=None,
    )
    conn.execute(
        "INSERT INTO sessions (id, user_id, device_id, created_at, last_used_at, expires_at,"
        " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            session.id,
            session.user_id,
            session.device_id,
            session.created_at,
            session.last_used_at,
            session.expires_at,
            session.revoked_at,
        ),
    )
    conn.execute(
        "INSERT INTO refresh_tokens (hash, session_id, spent) VALUES (?, ?, 0)",
        (refresh_hash, session.id),
    )
    return session


def get_session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(
        "SELECT id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at"
        " FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    return None if row is None else _session(row)


def list_sessions(conn: sqlite3.Connection, user_id: str, now: float) -> list[Session]:
    rows = conn.execute(
        "SELECT id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at"
        " FROM sessions"
        " WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?"
        " ORDER BY created_at, rowid",
        (user_id, now),
    ).fetchall()
    return [_session(r) for r in rows]


def rotate_refresh(
    conn: sqlite3.Connection,
    old_hash: bytes,
    new_hash: bytes,
    now: float,
    expires_at: float,
    max_age: float | None = None,
) -> RefreshResult:
    row = conn.execute(
        "SELECT t.spent, s.id, s.user_id, s.device_id, s.created_at, s.last_used_at,"
        " s.expires_at, s.revoked_at"
        " FROM refresh_tokens AS t JOIN sessions AS s ON s.id = t.session_id"
        " WHERE t.hash = ?",
        (old_hash,),
    ).fetchone()
    if row is None:
        return RefreshResult(RefreshOutcome.INVALID, None)
    spent, session = bool(row[0]), _session(row[1:])
    if not session.active(now):
        return RefreshResult(RefreshOutcome.INVALID, None)
    if max_age is not None:
        if now >= session.created_at + max_age:
            return RefreshResult(RefreshOutcome.INVALID, None)
        expires_at = min(expires_at, session.created_at + max_age)
    if spent:
        # A spent token presented again means it was copied: whoever holds
        # the current one may be the thief, so the whole session goes.
        conn.execute("UPDATE sessions SET revoked_at = ? WHERE id = ?", (now, session.id))
        return RefreshResult(RefreshOutcome.REUSED, replace(session, revoked_at=now))
    conn.execute("UPDATE refresh_tokens SET spent = 1 WHERE hash = ?", (old_hash,))
    conn.execute(
        "INSERT INTO refresh_tokens (hash, session_id, spent) VALUES (?, ?, 0)",
        (new_hash, session.id),
    )
    conn.execute(
        "UPDATE sessions SET expires_at = ?, last_used_at = ? WHERE id = ?",
        (expires_at, now, session.id),
    )
    return RefreshResult(
        RefreshOutcome.ROTATED, replace(session, expires_at=expires_at, last_used_at=now)
    )


def revoke_session(
    conn: sqlite3.Connection, session_id: str, now: float, user_id: str | None
) -> Session | None:
    session = get_session(conn, session_id)
    if session is None or not session.active(now):
        return None
    if user_id is not None and session.user_id != user_id:
        return None
    conn.execute("UPDATE sessions SET revoked_at = ? WHERE id = ?", (now, session_id))
    return session


def revoked_since(conn: sqlite3.Connection, since: float) -> list[Session]:
    rows = conn.execute(
        "SELECT id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at"
        " FROM sessions WHERE revoked_at >= ?"
        " UNION ALL SELECT id, user_id, device_id, created_at, last_used_at, expires_at,"
        " revoked_at FROM deleted_sessions WHERE revoked_at >= ?"
        " ORDER BY revoked_at, id",
        (since, since),
    ).fetchall()
    return [_session(r) for r in rows]


def touch_session(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    row = conn.execute(
        "SELECT device_id FROM sessions WHERE id = ? AND revoked_at IS NULL AND expires_at > ?",
        (session_id, now),
    ).fetchone()
    if row is None:
        return  # a dead session is not "used"; nothing to record
    # max(): concurrent requests may record their touches out of order.
    conn.execute(
        "UPDATE sessions SET last_used_at = max(last_used_at, ?) WHERE id = ?", (now, session_id)
    )
    conn.execute(
        "UPDATE devices SET last_seen_at = max(last_seen_at, ?) WHERE id = ?", (now, row[0])
    )


def purge_dead_sessions(conn: sqlite3.Connection, now: float) -> None:
    """Forget refresh hashes and deleted-session copies nobody can use any more."""
    conn.execute(
        "DELETE FROM refresh_tokens WHERE session_id IN"
        " (SELECT id FROM sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL)",
        (now,),
    )
    conn.execute("DELETE FROM deleted_sessions WHERE expires_at <= ?", (now,))
