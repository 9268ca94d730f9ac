"""Account lifecycle in the SQLite store: passwords, log out everywhere, deletion.

Plain synchronous functions run inside one transaction by
:class:`~relay.store._sqlite.SQLiteStore`.
"""

from __future__ import annotations

import sqlite3

from ._port import UserSummary
from ._sqlite_accounts import retire_sessions


def set_password(conn: sqlite3.Connection, user_id: str, password_hash: bytes) -> bool:
    cursor = conn.execute(
        "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
    )
    return cursor.rowcount == 1


def revoke_user_sessions(
    conn: sqlite3.Connection, user_id: str, now: float, keep: str | None
) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?"
        " AND id IS NOT ? ORDER BY created_at, rowid",
        (user_id, now, keep),
    ).fetchall()
    ids = [str(r[0]) for r in rows]
    conn.executemany("UPDATE sessions SET revoked_at = ? WHERE id = ?", [(now, i) for i in ids])
    return ids


def delete_user(
    conn: sqlite3.Connection, user_id: str, now: float, retire_until: float
) -> list[str] | None:
    row = conn.execute("SELECT username FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        return None
    active = retire_sessions(conn, "user_id", user_id, now)
    # Messages other users sent to this account go with it (the queue rows
    # cascade with its devices; the message rows hold the bodies).
    conn.execute("DELETE FROM messages WHERE recipient_user_id = ?", (user_id,))
    conn.execute(
        "INSERT OR REPLACE INTO retired_usernames (username, until) VALUES (?, ?)",
        (row[0], retire_until),
    )
    # ON DELETE CASCADE: devices, sessions (and refresh tokens), keys, queues.
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return active


def username_retired(conn: sqlite3.Connection, username: str, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM retired_usernames WHERE username = ? AND until > ?", (username, now)
    ).fetchone()
    return row is not None


def list_users(conn: sqlite3.Connection) -> list[UserSummary]:
    rows = conn.execute(
        "SELECT u.id, u.username, u.created_at, count(d.id), max(d.last_seen_at)"
        " FROM users AS u LEFT JOIN devices AS d ON d.user_id = u.id"
        " GROUP BY u.id ORDER BY u.username"
    ).fetchall()
    return [
        UserSummary(id=r[0], username=r[1], created_at=r[2], devices=int(r[3]), last_seen_at=r[4])
        for r in rows
    ]


def purge_retired(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM retired_usernames WHERE until <= ?", (now,))
