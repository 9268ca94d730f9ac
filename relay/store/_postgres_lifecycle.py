"""Account lifecycle in the PostgreSQL store: passwords, log out everywhere, deletion.

Plain synchronous functions run inside one transaction by
:class:`~relay.store._postgres.PostgresStore`; they mirror
``_sqlite_lifecycle``.
"""

from __future__ import annotations

from ._port import UserSummary
from ._postgres_accounts import Conn, retire_sessions


def set_password(conn: Conn, user_id: str, password_hash: bytes) -> bool:
    cursor = conn.execute(
        "UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id)
    )
    return cursor.rowcount == 1


def revoke_user_sessions(conn: Conn, user_id: str, now: float, keep: str | None) -> list[str]:
    rows = conn.execute(
        "WITH revoked AS (UPDATE sessions SET revoked_at = %s"
        " WHERE user_id = %s AND revoked_at IS NULL AND expires_at > %s"
        " AND id IS DISTINCT FROM %s RETURNING id, created_at, ord)"
        " SELECT id FROM revoked ORDER BY created_at, ord",
        (float(now), user_id, now, keep),
    ).fetchall()
    return [str(r[0]) for r in rows]


def delete_user(
    conn: Conn, user_id: str, now: float, retire_until: float
) -> list[str] | None:
    row = conn.execute(
        "SELECT username FROM users WHERE id = %s FOR UPDATE", (user_id,)
    ).fetchone()
    if row is None:
        return None
    # Lock its devices before deleting what was sent to them: a message being
    # queued for one of them right now commits first (and is deleted below),
    # and later ones find the devices gone, as with SQLite's single writer.
    conn.execute("SELECT 1 FROM devices WHERE user_id = %s FOR UPDATE", (user_id,))
    active = retire_sessions(conn, "user_id", user_id, now)
    # Messages other users sent to this account go with it (the queue rows
    # cascade with its devices; the message rows hold the bodies).
    conn.execute("DELETE FROM messages WHERE recipient_user_id = %s", (user_id,))
    conn.execute(
        "INSERT INTO retired_usernames (username, until) VALUES (%s, %s)"
        " ON CONFLICT (username) DO UPDATE SET until = excluded.until",
        (row[0], float(retire_until)),
    )
    # ON DELETE CASCADE: devices, sessions (and refresh tokens), keys, queues.
    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return active


def list_users(conn: Conn) -> list[UserSummary]:
    rows = conn.execute(
        "SELECT u.id, u.username, u.created_at, count(d.id), max(d.last_seen_at)"
        " FROM users AS u LEFT JOIN devices AS d ON d.user_id = u.id"
        " GROUP BY u.id ORDER BY u.username"
    ).fetchall()
    return [
        UserSummary(id=r[0], username=r[1], created_at=r[2], devices=int(r[3]), last_seen_at=r[4])
        for r in rows
    ]


def purge_retired(conn: Conn, now: float) -> None:
    conn.execute("DELETE FROM retired_usernames WHERE until <= %s", (now,))
