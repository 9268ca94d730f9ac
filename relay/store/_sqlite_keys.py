"""Prekey bundles of the SQLite store (X3DH key distribution).

Plain synchronous functions run inside one transaction by
:class:`~relay.store._sqlite.SQLiteStore`. ``fetch_bundles`` must run in a
``BEGIN IMMEDIATE`` transaction: its read-then-mark of the lowest unused key
is only atomic because the write lock is held from the start.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

from ..crypto import KeyUpload, OneTimePrekey, SignedPrekey
from ._port import (
    Bundle,
    KeyIdReused,
    PrekeyStatus,
    PutKeysResult,
    StoreError,
)


def _unused_count(conn: sqlite3.Connection, device_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM one_time_prekeys WHERE device_id = ? AND used = 0", (device_id,)
    ).fetchone()
    return int(row[0])


def put_keys(
    conn: sqlite3.Connection, device_id: str, upload: KeyUpload, now: float
) -> PutKeysResult:
    if conn.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone() is None:
        raise StoreError(f"no such device: {device_id}")
    row = conn.execute(
        "SELECT identity_key FROM device_keys WHERE device_id = ?", (device_id,)
    ).fetchone()
    identity_changed = row is not None and bytes(row[0]) != upload.identity_key

    key_ids = [k.key_id for k in upload.one_time_prekeys]
    # An id twice in one upload is as ambiguous as one uploaded before.
    reused = {key_id for key_id, n in Counter(key_ids).items() if n > 1}
    if row is not None and not identity_changed:
        # Used keys are kept (used = 1), so this also catches consumed ids:
        # a client re-uploading one would let two senders share a prekey.
        reused.update(
            int(r[0])
            for r in conn.execute(
                "SELECT key_id FROM one_time_prekeys WHERE device_id = ?"
                " AND key_id IN (SELECT value FROM json_each(?))",
                (device_id, json.dumps(key_ids)),
            )
        )
    if reused:
        raise KeyIdReused(sorted(reused))  # before any write: nothing changes

    if identity_changed:
        # Keys and used ids belong to the old identity; a new identity
        # starts from a clean slate (its ids may repeat the old ones).
        conn.execute("DELETE FROM one_time_prekeys WHERE device_id = ?", (device_id,))
    spk = upload.signed_prekey
    conn.execute(
        "INSERT INTO device_keys (device_id, identity_key, signed_prekey_id, signed_prekey,"
        " signed_prekey_signature, signed_prekey_uploaded_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET identity_key = excluded.identity_key,"
        " signed_prekey_id = excluded.signed_prekey_id,"
        " signed_prekey = excluded.signed_prekey,"
        " signed_prekey_signature = excluded.signed_prekey_signature,"
        # Re-sending the same signed prekey (a one-time prekey refill) keeps
        # its age: the age tells clients when to rotate it.
        " signed_prekey_uploaded_at = CASE WHEN device_keys.signed_prekey = excluded.signed_prekey"
        " AND device_keys.identity_key = excluded.identity_key"
        " THEN device_keys.signed_prekey_uploaded_at"
        " ELSE excluded.signed_prekey_uploaded_at END",
        (device_id, upload.identity_key, spk.key_id, spk.public_key, spk.signature, now),
    )
    conn.executemany(
        "INSERT INTO one_time_prekeys (device_id, key_id, public_key, used) VALUES (?, ?, ?, 0)",
        [(device_id, k.key_id, k.public_key) for k in upload.one_time_prekeys],
    )
    return PutKeysResult(
        identity_changed=identity_changed, one_time_prekeys=_unused_count(conn, device_id)
    )


def fetch_bundles(conn: sqlite3.Connection, user_id: str, device_id: str | None) -> list[Bundle]:
    rows = conn.execute(
        "SELECT d.id, k.identity_key, k.signed_prekey_id, k.signed_prekey,"
        " k.signed_prekey_signature"
        " FROM devices AS d JOIN device_keys AS k ON k.device_id = d.id"
        " WHERE d.user_id = ? AND (? IS NULL OR d.id = ?)"
        " ORDER BY d.created_at, d.rowid",
        (user_id, device_id, device_id),
    ).fetchall()
    bundles = []
    for dev_id, identity_key, spk_id, spk_public, spk_signature in rows:
        one_time: OneTimePrekey | None = None
        otk = conn.execute(
            "SELECT key_id, public_key FROM one_time_prekeys"
            " WHERE device_id = ? AND used = 0 ORDER BY key_id LIMIT 1",
            (dev_id,),
        ).fetchone()
        if otk is not None:
            one_time = OneTimePrekey(key_id=int(otk[0]), public_key=bytes(otk[1]))
            conn.execute(
                "UPDATE one_time_prekeys SET used = 1 WHERE device_id = ? AND key_id = ?",
                (dev_id, one_time.key_id),
            )
        bundles.append(
            Bundle(
                device_id=dev_id,
                identity_key=bytes(identity_key),
                signed_prekey=SignedPrekey(
                    key_id=int(spk_id), public_key=bytes(spk_public), signature=bytes(spk_signature)
                ),
                one_time_prekey=one_time,
                remaining=_unused_count(conn, dev_id),
            )
        )
    return bundles


def prekey_status(conn: sqlite3.Connection, device_id: str) -> PrekeyStatus:
    row = conn.execute(
        "SELECT signed_prekey_uploaded_at FROM device_keys WHERE device_id = ?", (device_id,)
    ).fetchone()
    return PrekeyStatus(
        one_time_prekeys=_unused_count(conn, device_id),
        signed_prekey_uploaded_at=None if row is None else float(row[0]),
    )
