"""Message queues of the SQLite store.

A ``messages`` row holds the message once; a ``queue`` row per target device
is its undelivered copy. The message row outlives its copies (until it
expires) because it is also the idempotency record of (sender device,
client id). Plain synchronous functions run inside one transaction by
:class:`~relay.store._sqlite.SQLiteStore`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence

from ._port import Enqueued, NewMessage, QueuedMessage, QueueFull
from ._sqlite_accounts import new_id


def enqueue(
    conn: sqlite3.Connection,
    messages: Sequence[NewMessage],
    max_per_device: int,
    max_per_sender: int | None = None,
) -> list[Enqueued | QueueFull]:
    """Store a batch with a fixed number of statements, not a few per message.

    The result is exactly what enqueueing the messages one by one would
    give: a later duplicate in the batch sees the earlier one, and a queue
    filled by earlier messages of the batch refuses later ones. Duplicates,
    live target devices and queue lengths (in all, and per sender) are read
    once for the whole batch and then tracked here. Nothing is ever evicted.
    """
    if max_per_device < 1:
        raise ValueError("max_per_device must be at least 1")
    seen = _originals(conn, messages)
    live = _existing_devices(conn, {d for m in messages for d in m.target_device_ids})
    room = _Room(conn, live, {m.sender_user_id for m in messages}, max_per_device, max_per_sender)
    results: list[Enqueued | QueueFull] = []
    copies: list[tuple[str, int, str]] = []
    for m in messages:
        original = seen.get((m.sender_device_id, m.client_id))
        if original is not None:
            results.append(original)
            continue
        # A target deleted since the caller listed the devices gets no copy
        # (its queue is gone); repeated ids get one copy.
        targets = tuple(d for d in dict.fromkeys(m.target_device_ids) if d in live)
        full = room.refusal(targets, m.sender_user_id)
        if full is not None:
            results.append(full)
            continue
        message_id, seq = _insert_message(conn, m, targets)
        room.take(targets, m.sender_user_id)
        copies.extend((device_id, seq, m.sender_user_id) for device_id in targets)
        result = Enqueued(message_id, seq, duplicate=False, target_device_ids=targets)
        seen[(m.sender_device_id, m.client_id)] = dataclasses.replace(result, duplicate=True)
        results.append(result)
    conn.executemany("INSERT INTO queue (device_id, seq, sender_user_id) VALUES (?, ?, ?)", copies)
    return results


class _Room:
    """Queue lengths of a batch's target devices, in all and per sender, kept current."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        devices: set[str],
        senders: set[str],
        max_per_device: int,
        max_per_sender: int | None,
    ) -> None:
        self._max_per_device = max_per_device
        self._max_per_sender = max_per_sender
        self._lengths = _queue_lengths(conn, devices)
        self._shares = _sender_shares(conn, devices, senders)

    def refusal(self, targets: Sequence[str], sender: str) -> QueueFull | None:
        """Why the message cannot be queued for every target, or None if it can."""
        for device_id in targets:
            if self._lengths[device_id] >= self._max_per_device:
                return QueueFull(device_id=device_id, sender_share=False)
            share = self._shares.get((device_id, sender), 0)
            if self._max_per_sender is not None and share >= self._max_per_sender:
                return QueueFull(device_id=device_id, sender_share=True)
        return None

    def take(self, targets: Sequence[str], sender: str) -> None:
        for device_id in targets:
            self._lengths[device_id] += 1
            self._shares[(device_id, sender)] = self._shares.get((device_id, sender), 0) + 1


def _sender_shares(
    conn: sqlite3.Connection, device_ids: set[str], senders: set[str]
) -> dict[tuple[str, str], int]:
    """Copies queued per (device, sender user), for these devices and senders."""
    rows = conn.execute(
        "SELECT device_id, sender_user_id, count(*) FROM queue"
        " WHERE device_id IN (SELECT value FROM json_each(?))"
        " AND sender_user_id IN (SELECT value FROM json_each(?))"
        " GROUP BY device_id, sender_user_id",
        (json.dumps(sorted(device_ids)), json.dumps(sorted(senders))),
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}


def _originals(
    conn: sqlite3.Connection, messages: Sequence[NewMessage]
) -> dict[tuple[str, str], Enqueued]:
    wanted = sorted({(m.sender_device_id, m.client_id) for m in messages})
    # SQLite's JSON functions cut a string at a NUL character, so a client id
    # holding one would never be found (and its resend would fail the whole
    # batch on the UNIQUE constraint): those few are looked up one by one.
    odd = [key for key in wanted if "\x00" in key[0] + key[1]]
    plain = [key for key in wanted if key not in odd]
    rows = conn.execute(
        "SELECT sender_device_id, client_id, message_id, seq, target_device_ids FROM messages"
        " WHERE (sender_device_id, client_id) IN"
        " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
        (json.dumps(plain),),
    ).fetchall()
    for key in odd:
        rows.extend(
            conn.execute(
                "SELECT sender_device_id, client_id, message_id, seq, target_device_ids"
                " FROM messages WHERE sender_device_id = ? AND client_id = ?",
                key,
            )
        )
    return {
        (r[0], r[1]): Enqueued(
            message_id=r[2],
            seq=int(r[3]),
            duplicate=True,
            target_device_ids=tuple(json.loads(r[4])),
        )
        for r in rows
    }


def _existing_devices(conn: sqlite3.Connection, device_ids: set[str]) -> set[str]:
    rows = conn.execute(
        "SELECT id FROM devices WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(device_ids)),),
    )
    return {r[0] for r in rows}


def _queue_lengths(conn: sqlite3.Connection, device_ids: set[str]) -> dict[str, int]:
    lengths = dict.fromkeys(device_ids, 0)
    rows = conn.execute(
        "SELECT device_id, count(*) FROM queue WHERE device_id IN"
        " (SELECT value FROM json_each(?)) GROUP BY device_id",
        (json.dumps(sorted(device_ids)),),
    )
    lengths.update({r[0]: int(r[1]) for r in rows})
    return lengths


def _insert_message(
    conn: sqlite3.Connection, m: NewMessage, targets: tuple[str, ...]
) -> tuple[str, int]:
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
    return message_id, seq


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


def ack_many(conn: sqlite3.Connection, acks: Sequence[tuple[str, Sequence[str]]]) -> int:
    """Delete the named copies of every (device, message ids) pair; how many there were."""
    seqs: list[int] = []
    for device_id, message_ids in acks:
        # json_each instead of "IN (?, ?, ...)": any number of ids, no SQL built
        # from strings, no host-parameter limit.
        seqs.extend(
            r[0]
            for r in conn.execute(
                "DELETE FROM queue WHERE device_id = ? AND seq IN"
                " (SELECT seq FROM messages WHERE message_id IN (SELECT value FROM json_each(?)))"
                " RETURNING seq",
                (device_id, json.dumps(list(message_ids))),
            )
        )
    forget_delivered(conn, seqs)  # once for the batch
    return len(seqs)


def queued_seqs(conn: sqlite3.Connection, device_id: str) -> list[int]:
    """The messages the device still has copies of (before its copies are deleted)."""
    return [r[0] for r in conn.execute("SELECT seq FROM queue WHERE device_id = ?", (device_id,))]


def forget_delivered(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Drop the body of each of these messages that no device still waits for.

    The row stays until it expires: it answers a resent client id as a
    duplicate. The body does not: relay keeps no ciphertext that nobody can
    be sent any more (acked by every target, or its last copy deleted).
    """
    if seqs:
        conn.execute(
            "UPDATE messages SET body = '' WHERE seq IN (SELECT value FROM json_each(?))"
            " AND body != '' AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.seq = messages.seq)",
            (json.dumps(list(seqs)),),
        )


def queue_depths(conn: sqlite3.Connection, limit: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT q.device_id, u.username, count(*) AS n FROM queue AS q"
        " JOIN devices AS d ON d.id = q.device_id JOIN users AS u ON u.id = d.user_id"
        " GROUP BY q.device_id ORDER BY n DESC, q.device_id LIMIT ?",
        (max(limit, 0),),
    ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def purge_expired(conn: sqlite3.Connection, now: float) -> int:
    """Drop expired messages; return how many undelivered copies went with them."""
    copies = conn.execute(
        "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE expires_at <= ?)", (now,)
    ).rowcount
    # The idempotency record goes too: after expiry a resend is a new message.
    conn.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
    return copies
