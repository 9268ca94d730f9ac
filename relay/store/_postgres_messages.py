"""Message queues of the PostgreSQL store.

The same shape as ``_sqlite_messages``: a ``messages`` row holds the message
once (and is the idempotency record of its sender device and client id), a
``queue`` row per target device is its undelivered copy.

**Order.** Clients resume with ``pending(device, after_seq)``, and a
connection skips live pushes whose ``seq`` it has already replayed, so a
message must never become visible after one with a higher ``seq``. SQLite
gets this from its single writer. Here two transactions (in one process or
in several) could take seqs 10 and 11 and commit 11 first: a reader between
the two commits would move past 10 for good. So every transaction that
stores messages takes one transaction-level advisory lock
(:func:`lock_messages`) *before* it allocates seqs, and holds it until it
commits: seqs are handed out, and become visible, in one order. The lock
also makes the duplicate check and the queue counts of :func:`enqueue`
exact, as SQLite's write lock does. Acks, reads and purges do not take it.

**Batches.** A batch costs a fixed number of statements, whatever its size:
arrays go in with ``unnest``, and seqs are allocated for the whole batch
with one ``nextval`` call per message in one statement.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from ._port import Enqueued, NewMessage, QueuedMessage, QueueFull
from ._postgres_accounts import Conn, storable
from ._sqlite_accounts import new_id


def lock_messages(conn: Conn, key: int) -> None:
    """Wait for (and hold until the transaction ends) the lock that orders seqs.

    Bounded by the connection's ``lock_timeout``: past it, the driver raises
    ``LockNotAvailable`` and the transaction rolls back.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


@dataclasses.dataclass(frozen=True, slots=True)
class _New:
    """A result to be: the batch's *index*-th new message (or a repeat of it in the batch)."""

    index: int
    duplicate: bool


def enqueue(
    conn: Conn,
    messages: Sequence[NewMessage],
    max_per_device: int,
    max_per_sender: int | None,
    lock_key: int,
) -> list[Enqueued | QueueFull]:
    """Store a batch as enqueueing its messages one by one would (see ``_sqlite_messages``).

    Decides every message first (duplicate, refused, or new), then allocates
    the new ones' seqs in batch order and inserts them.
    """
    if max_per_device < 1:
        raise ValueError("max_per_device must be at least 1")
    lock_messages(conn, lock_key)
    seen: dict[tuple[str, str], Enqueued | _New] = dict(_originals(conn, messages))
    live = _existing_devices(conn, {d for m in messages for d in m.target_device_ids})
    room = _Room(conn, live, {m.sender_user_id for m in messages}, max_per_device, max_per_sender)
    decided: list[Enqueued | QueueFull | _New] = []
    new: list[tuple[NewMessage, tuple[str, ...]]] = []
    for m in messages:
        original = seen.get((m.sender_device_id, m.client_id))
        if original is not None:
            decided.append(original)
            continue
        # A target deleted since the caller listed the devices gets no copy
        # (its queue is gone); repeated ids get one copy.
        targets = tuple(d for d in dict.fromkeys(m.target_device_ids) if d in live)
        full = room.refusal(targets, m.sender_user_id)
        if full is not None:
            decided.append(full)
            continue
        room.take(targets, m.sender_user_id)
        decided.append(_New(len(new), duplicate=False))
        seen[(m.sender_device_id, m.client_id)] = _New(len(new), duplicate=True)
        new.append((m, targets))
    stored: list[Enqueued] = []
    if new:
        seqs = _allocate_seqs(conn, len(new))
        stored = [
            Enqueued(new_id(), seq, duplicate=False, target_device_ids=targets)
            for seq, (_, targets) in zip(seqs, new, strict=True)
        ]
        _insert_messages(conn, [(e, m) for e, (m, _) in zip(stored, new, strict=True)])
    return [
        dataclasses.replace(stored[d.index], duplicate=d.duplicate) if isinstance(d, _New) else d
        for d in decided
    ]


def _allocate_seqs(conn: Conn, n: int) -> list[int]:
    """*n* new seqs, ascending. Only ever called under :func:`lock_messages`."""
    rows = conn.execute(
        "SELECT nextval('messages_seq') FROM generate_series(1, %s)", (n,)
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def _insert_messages(conn: Conn, rows: Sequence[tuple[Enqueued, NewMessage]]) -> None:
    """The batch's message rows, then all of their queued copies: two statements."""
    conn.execute(
        "INSERT INTO messages (seq, message_id, sender_user_id, sender_device_id,"
        " sender_username, client_id, recipient_user_id, target_device_ids, body, sent_at,"
        " expires_at) SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[],"
        " %b::text[], %b::bytea[], %b::text[], %b::jsonb[], %b::bytea[], %b::float8[],"
        " %b::float8[])",
        (
            [e.seq for e, _ in rows],
            [e.message_id for e, _ in rows],
            [m.sender_user_id for _, m in rows],
            [m.sender_device_id for _, m in rows],
            [m.sender_username for _, m in rows],
            [m.client_id.encode() for _, m in rows],
            [m.recipient_user_id for _, m in rows],
            [json.dumps(e.target_device_ids) for e, _ in rows],
            [m.body.encode() for _, m in rows],
            [float(m.sent_at) for _, m in rows],
            [float(m.expires_at) for _, m in rows],
        ),
    )
    copies = [(d, e.seq, m.sender_user_id) for e, m in rows for d in e.target_device_ids]
    if copies:
        conn.execute(
            "INSERT INTO queue (device_id, seq, sender_user_id)"
            " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[])",
            ([c[0] for c in copies], [c[1] for c in copies], [c[2] for c in copies]),
        )


class _Room:
    """Queue lengths of a batch's target devices, in all and per sender, kept current."""

    def __init__(
        self,
        conn: Conn,
        devices: set[str],
        senders: set[str],
        max_per_device: int,
        max_per_sender: int | None,
    ) -> None:
        self._max_per_device = max_per_device
        self._max_per_sender = max_per_sender
        self._lengths = dict.fromkeys(devices, 0)
        self._shares: dict[tuple[str, str], int] = {}
        # One read for both counts: per device, a row per sender of the batch
        # and one (NULL) for everyone else; a device's length is their sum.
        rows = conn.execute(
            "SELECT device_id, CASE WHEN sender_user_id = ANY(%b::text[]) THEN sender_user_id"
            " END AS sender, count(*) FROM queue WHERE device_id = ANY(%b::text[])"
            " GROUP BY device_id, sender",
            (sorted(senders), sorted(devices)),
        )
        for device_id, sender, count in rows:
            self._lengths[device_id] += int(count)
            if sender is not None:
                self._shares[(device_id, sender)] = int(count)

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


def _originals(conn: Conn, messages: Sequence[NewMessage]) -> dict[tuple[str, str], Enqueued]:
    keys = sorted({(m.sender_device_id, m.client_id) for m in messages})
    rows = conn.execute(
        "SELECT m.sender_device_id, m.client_id, m.message_id, m.seq, m.target_device_ids"
        " FROM messages AS m JOIN unnest(%b::text[], %b::bytea[]) AS k(device_id, client_id)"
        " ON m.sender_device_id = k.device_id AND m.client_id = k.client_id",
        ([k[0] for k in keys], [k[1].encode() for k in keys]),
    ).fetchall()
    return {
        (r[0], bytes(r[1]).decode()): Enqueued(
            message_id=r[2], seq=int(r[3]), duplicate=True, target_device_ids=tuple(r[4])
        )
        for r in rows
    }


def _existing_devices(conn: Conn, device_ids: set[str]) -> set[str]:
    # KEY SHARE: a device being deleted right now is waited for (and then
    # absent); one found here cannot go before the copies are inserted.
    rows = conn.execute(
        "SELECT id FROM devices WHERE id = ANY(%b::text[]) FOR KEY SHARE",
        (sorted(d for d in device_ids if storable(d)),),
    )
    return {r[0] for r in rows}


def pending(conn: Conn, device_id: str, after_seq: int, limit: int) -> list[QueuedMessage]:
    rows = conn.execute(
        "SELECT m.message_id, m.seq, q.device_id, m.sender_user_id, m.sender_device_id,"
        " m.sender_username, m.client_id, m.body, m.sent_at"
        " FROM queue AS q JOIN messages AS m ON m.seq = q.seq"
        " WHERE q.device_id = %s AND q.seq > %s ORDER BY q.seq LIMIT %s",
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
            client_id=bytes(r[6]).decode(),
            body=bytes(r[7]).decode(),
            sent_at=r[8],
        )
        for r in rows
    ]


def ack_many(conn: Conn, acks: Sequence[tuple[str, Sequence[str]]]) -> int:
    """Delete the named copies of every (device, message ids) pair in one statement."""
    pairs = [(d, m) for d, ids in acks for m in ids if storable(d, m)]
    if not pairs:
        return 0
    seqs = [
        r[0]
        for r in conn.execute(
            "DELETE FROM queue AS q USING messages AS m,"
            " unnest(%b::text[], %b::text[]) AS a(device_id, message_id)"
            " WHERE m.message_id = a.message_id AND q.seq = m.seq AND q.device_id = a.device_id"
            " RETURNING q.seq",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        ).fetchall()
    ]
    forget_delivered(conn, seqs)
    return len(seqs)


def queued_seqs(conn: Conn, device_id: str) -> list[int]:
    """The messages the device still has copies of (before its copies are deleted)."""
    if not storable(device_id):
        return []
    rows = conn.execute("SELECT seq FROM queue WHERE device_id = %s", (device_id,)).fetchall()
    return [int(r[0]) for r in rows]


def forget_delivered(conn: Conn, seqs: Sequence[int]) -> None:
    """Drop the bodies nobody waits for (as the SQLite adapter's ``forget_delivered``)."""
    if seqs:
        conn.execute(
            "UPDATE messages AS m SET body = ''::bytea WHERE m.seq = ANY(%b::bigint[])"
            " AND m.body <> ''::bytea"
            " AND NOT EXISTS (SELECT 1 FROM queue AS q WHERE q.seq = m.seq)",
            (list(dict.fromkeys(seqs)),),
        )


def queue_depths(conn: Conn, limit: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT q.device_id, u.username, count(*) AS n FROM queue AS q"
        " JOIN devices AS d ON d.id = q.device_id JOIN users AS u ON u.id = d.user_id"
        " GROUP BY q.device_id, u.username ORDER BY n DESC, q.device_id LIMIT %s",
        (max(limit, 0),),
    ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def purge_expired(conn: Conn, now: float) -> int:
    """Drop expired messages; return how many undelivered copies went with them."""
    copies = conn.execute(
        "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE expires_at <= %s)",
        (now,),
    ).rowcount
    # The idempotency record goes too: after expiry a resend is a new message.
    conn.execute("DELETE FROM messages WHERE expires_at <= %s", (now,))
    return copies
