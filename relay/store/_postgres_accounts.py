"""Users, devices and sessions of the PostgreSQL store.

Plain synchronous functions over a psycopg connection, each run by
:class:`~relay.store._postgres.PostgresStore` inside one transaction on a
worker thread; they never begin or end transactions themselves. They mirror
``_sqlite_accounts`` function for function; where SQLite's single writer
made a read-then-write safe, a row lock does it here (``FOR UPDATE``,
``FOR NO KEY UPDATE``, ``FOR KEY SHARE``), taken devices before sessions.

A string with a NUL character cannot be PostgreSQL text, so no stored id or
username has one: a lookup by such a string finds nothing (as in SQLite)
instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeAlias

from psycopg import Connection, sql
from psycopg.rows import TupleRow

from ._port import (
    Device,
    RefreshOutcome,
    RefreshResult,
    Session,
    StoreError,
    User,
    UsernameTaken,
)
from ._sqlite_accounts import new_id

Conn: TypeAlias = Connection[TupleRow]


def storable(*texts: str | None) -> bool:
    """Whether PostgreSQL text can hold every one of *texts* (no NUL)."""
    return not any(text is not None and "\x00" in text for text in texts)


# -- users ---------------------------------------------------------------

_USER = "SELECT id, username, password_hash, created_at FROM users"


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], username=row[1], password_hash=bytes(row[2]), created_at=row[3])


def create_user(conn: Conn, username: str, password_hash: bytes, now: float) -> User:
    if conn.execute("SELECT 1 FROM users WHERE username = %s", (username,)).fetchone():
        raise UsernameTaken(username)
    retired = conn.execute(
        "SELECT 1 FROM retired_usernames WHERE username = %s AND until > %s", (username, now)
    ).fetchone()
    if retired is not None:
        raise UsernameTaken(username)  # a deleted account's name, still quarantined
    user = User(id=new_id(), username=username, password_hash=password_hash, created_at=now)
    # Two processes may both have found the name free: the loser inserts
    # nothing (no error that would spoil the transaction) and is told so.
    inserted = conn.execute(
        "INSERT INTO users (id, username, password_hash, created_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (username) DO NOTHING RETURNING id",
        (user.id, user.username, user.password_hash, float(user.created_at)),
    ).fetchone()
    if inserted is None:
        raise UsernameTaken(username)
    return user


def get_user(conn: Conn, user_id: str) -> User | None:
    if not storable(user_id):
        return None
    row = conn.execute(_USER + " WHERE id = %s", (user_id,)).fetchone()
    return None if row is None else _user(row)


def get_user_by_name(conn: Conn, username: str) -> User | None:
    if not storable(username):
        return None
    row = conn.execute(_USER + " WHERE username = %s", (username,)).fetchone()
    return None if row is None else _user(row)


# -- devices -------------------------------------------------------------

_DEVICE = "SELECT id, user_id, name, created_at, last_seen_at FROM devices"


def _device(row: Sequence[Any]) -> Device:
    return Device(
        id=row[0],
        user_id=row[1],
        name=bytes(row[2]).decode(),
        created_at=row[3],
        last_seen_at=row[4],
    )


def create_device(conn: Conn, user_id: str, name: str, now: float) -> Device:
    # KEY SHARE: the user cannot be deleted under us (and we wait if it is being).
    user = conn.execute("SELECT 1 FROM users WHERE id = %s FOR KEY SHARE", (user_id,)).fetchone()
    if user is None:
        raise StoreError(f"no such user: {user_id}")
    device = Device(id=new_id(), user_id=user_id, name=name, created_at=now, last_seen_at=now)
    conn.execute(
        "INSERT INTO devices (id, user_id, name, created_at, last_seen_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (device.id, device.user_id, name.encode(), float(now), float(now)),
    )
    return device


def get_device(conn: Conn, device_id: str) -> Device | None:
    if not storable(device_id):
        return None
    row = conn.execute(_DEVICE + " WHERE id = %s", (device_id,)).fetchone()
    return None if row is None else _device(row)


def list_devices(conn: Conn, user_id: str) -> list[Device]:
    rows = conn.execute(
        _DEVICE + " WHERE user_id = %s ORDER BY created_at, ord", (user_id,)
    ).fetchall()
    return [_device(r) for r in rows]


def resolve_users(conn: Conn, usernames: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    rows = conn.execute(
        "SELECT u.username, u.id, d.id FROM users AS u LEFT JOIN devices AS d ON d.user_id = u.id"
        " WHERE u.username = ANY(%b::text[]) ORDER BY d.created_at, d.ord",
        ([name for name in usernames if storable(name)],),
    ).fetchall()
    found: dict[str, tuple[str, list[str]]] = {}
    for username, user_id, device_id in rows:
        entry = found.setdefault(username, (user_id, []))
        if device_id is not None:
            entry[1].append(device_id)
    return found


def count_devices(conn: Conn, user_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM devices WHERE user_id = %s", (user_id,)).fetchone()
    return 0 if row is None else int(row[0])


def delete_device(conn: Conn, user_id: str, device_id: str, now: float) -> list[str] | None:
    if not storable(device_id):
        return None
    # FOR UPDATE first: sessions created or touched meanwhile wait for us, so
    # the revoked copies below see every session that the delete takes.
    owned = conn.execute(
        "SELECT 1 FROM devices WHERE id = %s AND user_id = %s FOR UPDATE", (device_id, user_id)
    ).fetchone()
    if owned is None:
        return None
    active = retire_sessions(conn, "device_id", device_id, now)
    # ON DELETE CASCADE takes the sessions (and their refresh tokens), the
    # keys and the queued copies with it.
    conn.execute("DELETE FROM devices WHERE id = %s", (device_id,))
    return active


# Built once, at import, for the two columns below; psycopg quotes the name.
_ACTIVE_SESSIONS = {
    column: sql.SQL(
        "SELECT id FROM sessions WHERE {} = %s AND revoked_at IS NULL"
        " AND expires_at > %s ORDER BY created_at, ord"
    ).format(sql.Identifier(column))
    for column in ("device_id", "user_id")
}
_KEEP_REVOKED_COPIES = {
    column: sql.SQL(
        "INSERT INTO deleted_sessions"
        " (id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at)"
        " SELECT id, user_id, device_id, created_at, last_used_at, expires_at,"
        " coalesce(revoked_at, %s) FROM sessions WHERE {} = %s"
        " AND (revoked_at IS NOT NULL OR expires_at > %s)"
        " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,"
        " device_id = excluded.device_id, created_at = excluded.created_at,"
        " last_used_at = excluded.last_used_at, expires_at = excluded.expires_at,"
        " revoked_at = excluded.revoked_at"
    ).format(sql.Identifier(column))
    for column in ("device_id", "user_id")
}


def retire_sessions(conn: Conn, column: str, value: str, now: float) -> list[str]:
    """Before sessions are deleted (with their device or user, by *column*): their active ids.

    As in SQLite: a revoked copy of each live session stays in
    ``deleted_sessions`` until it expires, so revocation lists rebuilt after a
    restart still hold it.
    """
    active = [str(r[0]) for r in conn.execute(_ACTIVE_SESSIONS[column], (value, now))]
    conn.execute(_KEEP_REVOKED_COPIES[column], (float(now), value, now))
    return active


# -- sessions ------------------------------------------------------------

_SESSION = (
    "SELECT id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at FROM sessions"
)


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
    conn: Conn, user_id: str, device_id: str, refresh_hash: bytes, now: float, expires_at: float
) -> Session:
    owned = conn.execute(
        "SELECT 1 FROM devices WHERE id = %s AND user_id = %s FOR KEY SHARE", (device_id, user_id)
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
        "INSERT INTO sessions (id, user_id, device_id, created_at, last_used_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (session.id, user_id, device_id, float(now), float(now), float(expires_at)),
    )
    conn.execute(
        "INSERT INTO refresh_tokens (hash, session_id, spent) VALUES (%s, %s, false)",
        (refresh_hash, session.id),
    )
    return session


def get_session(conn: Conn, session_id: str) -> Session | None:
    if not storable(session_id):
        return None
    row = conn.execute(_SESSION + " WHERE id = %s", (session_id,)).fetchone()
    return None if row is None else _session(row)


def list_sessions(conn: Conn, user_id: str, now: float) -> list[Session]:
    rows = conn.execute(
        _SESSION + " WHERE user_id = %s AND revoked_at IS NULL AND expires_at > %s"
        " ORDER BY created_at, ord",
        (user_id, now),
    ).fetchall()
    return [_session(r) for r in rows]


def rotate_refresh(
    conn: Conn,
    old_hash: bytes,
    new_hash: bytes,
    now: float,
    expires_at: float,
    max_age: float | None = None,
) -> RefreshResult:
    # Lock the session first, then read the token: two processes rotating the
    # same token one after the other, as SQLite would run them, so the second
    # sees it spent (REUSED) instead of both rotating it.
    conn.execute(
        "SELECT 1 FROM sessions WHERE id ="
        " (SELECT session_id FROM refresh_tokens WHERE hash = %s) FOR NO KEY UPDATE",
        (old_hash,),
    )
    row = conn.execute(
        "SELECT t.spent, s.id, s.user_id, s.device_id, s.created_at, s.last_used_at,"
        " s.expires_at, s.revoked_at"
        " FROM refresh_tokens AS t JOIN sessions AS s ON s.id = t.session_id"
        " WHERE t.hash = %s",
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
        conn.execute("UPDATE sessions SET revoked_at = %s WHERE id = %s", (float(now), session.id))
        return RefreshResult(RefreshOutcome.REUSED, replace(session, revoked_at=now))
    conn.execute("UPDATE refresh_tokens SET spent = true WHERE hash = %s", (old_hash,))
    conn.execute(
        "INSERT INTO refresh_tokens (hash, session_id, spent) VALUES (%s, %s, false)",
        (new_hash, session.id),
    )
    conn.execute(
        "UPDATE sessions SET expires_at = %s, last_used_at = %s WHERE id = %s",
        (float(expires_at), float(now), session.id),
    )
    return RefreshResult(
        RefreshOutcome.ROTATED, replace(session, expires_at=expires_at, last_used_at=now)
    )


def revoke_session(
    conn: Conn, session_id: str, now: float, user_id: str | None
) -> Session | None:
    if not storable(session_id, user_id):
        return None
    row = conn.execute(_SESSION + " WHERE id = %s FOR NO KEY UPDATE", (session_id,)).fetchone()
    session = None if row is None else _session(row)
    if session is None or not session.active(now):
        return None
    if user_id is not None and session.user_id != user_id:
        return None
    conn.execute("UPDATE sessions SET revoked_at = %s WHERE id = %s", (float(now), session_id))
    return session


def revoked_since(conn: Conn, since: float) -> list[Session]:
    rows = conn.execute(
        "SELECT id, user_id, device_id, created_at, last_used_at, expires_at, revoked_at"
        " FROM sessions WHERE revoked_at >= %s"
        " UNION ALL SELECT id, user_id, device_id, created_at, last_used_at, expires_at,"
        " revoked_at FROM deleted_sessions WHERE revoked_at >= %s"
        " ORDER BY revoked_at, id",
        (since, since),
    ).fetchall()
    return [_session(r) for r in rows]


def touch_session(conn: Conn, session_id: str, now: float) -> None:
    row = conn.execute(
        "SELECT device_id FROM sessions WHERE id = %s AND revoked_at IS NULL AND expires_at > %s",
        (session_id, now),
    ).fetchone()
    if row is None:
        return  # a dead session is not "used"; nothing to record
    # The device first, then the session: the order delete_device locks them in.
    # greatest(): concurrent requests may record their touches out of order.
    conn.execute(
        "UPDATE devices SET last_seen_at = greatest(last_seen_at, %s) WHERE id = %s",
        (float(now), row[0]),
    )
    conn.execute(
        "UPDATE sessions SET last_used_at = greatest(last_used_at, %s) WHERE id = %s",
        (float(now), session_id),
    )


def purge_dead_sessions(conn: Conn, now: float) -> None:
    """Forget refresh hashes and deleted-session copies nobody can use any more."""
    conn.execute(
        "DELETE FROM refresh_tokens WHERE session_id IN"
        " (SELECT id FROM sessions WHERE expires_at <= %s OR revoked_at IS NOT NULL)",
        (now,),
    )
    conn.execute("DELETE FROM deleted_sessions WHERE expires_at <= %s", (now,))
