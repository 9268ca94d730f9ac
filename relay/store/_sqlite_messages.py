"""Message queues of the SQLite store.

A ``messages`` row holds the message once; a ``queue`` row per target device
is its undelivered copy. The message row outlives its copies (until it
expires) because it is also the idempotency record of (sender device,
client id). Plain synchronous functions run inside one transaction by
:class:`~relay.store._sqlite.SQLiteStore`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from ._port import Enqueued, NewMessage, QueuedMessage
from ._sqlite_accounts import new_id


def enqueue(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], max_per_device: int
) -> list[Enqueued]:
    # One message after another, so a batch means exactly what the same
    # messages enqueued one by one would: a later duplicate in the batch sees
    # the earlier one, and trimming counts against the queue as it is then.
    return [_enqueue_one(conn, m, max_per_device) for m in messages]


def _enqueue_one(conn: sqlite3.Connection, m: NewMessage, max_per_device: int) -> Enqueued:
    original = conn.execute(
        "SELECT message_id, seq, target_device_ids FROM messages"
        " WHERE sender_device_id = ? AND client_id = ?",
        (m.sender_device_id, m.client_id),
    ).fetchone()
    if original is not None:
        return Enqueued(
            message_id=original[0],
            seq=int(original[1]),
            duplicate=True,
            target_device_ids=tuple(json.loads(original[2])),
            dropped=0,
        )

    # A target deleted since the caller listed the devices gets no copy
    # (its queue is gone); repeated ids get one copy.
    wanted = list(dict.fromkeys(m.target_device_ids))
    existing = {
        r[0]
        for r in conn.execute(
            "SELECT id FROM devices WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(wanted),),
        )
    }
    targets = tuple(d for d in wanted if d in existing)

    message_id = new_id()
    cursor = conn.execute(
        "INSERT INTO messages (message_id, sender_user_id, sender_device_id, sender_username,"
        " client_id, recipient_user_id, target_device_ids, body, sent_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message_id,
            m.sender_user_id,
            m.sender_device_id,
            m.sender_username,
            m.client_id,
            m.recipient_user_id,
            json.dumps(targets),
            m.body,
            m.sent_at,
            m.expires_at,
        ),
    )
    seq = cursor.lastrowid
    assert seq is not None  # an INSERT into a rowid table always sets it
    conn.executemany(
        "INSERT INTO queue (device_id, seq) VALUES (?, ?)", [(d, seq) for d in targets]
    )

    dropped = 0
    for device_id in targets:
        # Everything past the newest max_per_device copies goes; the new
        # message has the highest seq so it is never the one dropped.
        dropped += conn.execute(
            "DELETE FROM queue WHERE device_id = ? AND seq IN (SELECT seq FROM queue"
            " WHERE device_id = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)",
            (device_id, device_id, max_per_device),
        ).rowcount
    return Enqueued(
        message_id=message_id, seq=seq, duplicate=False, target_device_ids=targets, dropped=dropped
    )


def pending(
    conn: sqlite3.Connection, device_id: str, after_seq: int, limit: int
) -> list[QueuedMessage]:
    rows = conn.execute(
        "SELECT m.message_id, m.seq, q.device_id, m.sender_user_id, m.sender_device_id,"
        " m.sender_username, m.client_id, m.body, m.sent_at"
        " FROM queue AS q JOIN messages AS m ON m.seq = q.seq"
        " WHERE q.device_id = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
        # SQLite reads a negative LIMIT as "no limit"; a caller's bug must not
        # turn into an unbounded read.
        (device_id, after_seq, max(limit, 0)),
    ).fetchall()
    return [
        QueuedMessage(
            message_id=r[0],
            seq=int(r[1]),
            device_id=r[2],
            sender_user_id=r[3],
            sender_device_id=r[4],
            sender_username=r[5],
            client_id=r[6],
            body=r[7],
            sent_at=r[8],
        )
        for r in rows
    ]


def ack(conn: sqlite3.Connection, device_id: str, message_ids: Sequence[str]) -> int:
    # json_each instead of "IN (?, ?, ...)": any number of ids, no SQL built
    # from strings, no host-parameter limit.
    cursor = conn.execute(
        "DELETE FROM queue WHERE device_id = ? AND seq IN"
        " (SELECT seq FROM messages WHERE message_id IN (SELECT value FROM json_each(?)))",
        (device_id, json.dumps(list(message_ids))),
    )
    return cursor.rowcount


def purge_expired(conn: sqlite3.Connection, now: float) -> int:
    """Drop expired messages; return how many undelivered copies went with them."""
    copies = conn.execute(
        "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE expires_at <= ?)", (now,)
    ).rowcount
    # The idempotency record goes too: after expiry a resend is a new message.
    conn.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
    return copies
