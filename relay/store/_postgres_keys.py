"""Prekey bundles of the PostgreSQL store (X3DH key distribution).

Plain synchronous functions run inside one transaction by
:class:`~relay.store._postgres.PostgresStore`; they mirror ``_sqlite_keys``.
SQLite makes a fetch atomic by holding the database's write lock; here row
locks do, so fetches on any number of processes run side by side:

- ``fetch_bundles`` takes each device's lowest unused one-time prekey with
  ``FOR UPDATE SKIP LOCKED`` and marks it used in the same statement: two
  fetchers never get the same key, and one never waits for another (it
  takes the next key instead);
- it reads the bundle ``FOR SHARE``, and ``put_keys`` locks the bundle
  ``FOR UPDATE`` before touching the one-time keys, so a fetch never mixes
  an old identity key with a new identity's prekey.
"""

from __future__ import annotations

from collections import Counter

from ..crypto import KeyUpload, OneTimePrekey, SignedPrekey
from ._port import Bundle, KeyIdReused, PrekeyStatus, PutKeysResult, StoreError
from ._postgres_accounts import Conn, storable


def _unused_counts(conn: Conn, device_ids: list[str]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT device_id, count(*) FROM one_time_prekeys"
        " WHERE device_id = ANY(%b::text[]) AND NOT used GROUP BY device_id",
        (device_ids,),
    )
    counts = dict.fromkeys(device_ids, 0)
    counts.update({r[0]: int(r[1]) for r in rows})
    return counts


def put_keys(conn: Conn, device_id: str, upload: KeyUpload, now: float) -> PutKeysResult:
    # NO KEY UPDATE: uploads for one device run one at a time (their id
    # checks would race otherwise), without blocking messages to it.
    device = conn.execute(
        "SELECT 1 FROM devices WHERE id = %s FOR NO KEY UPDATE", (device_id,)
    ).fetchone()
    if device is None:
        raise StoreError(f"no such device: {device_id}")
    row = conn.execute(
        "SELECT identity_key FROM device_keys WHERE device_id = %s FOR UPDATE", (device_id,)
    ).fetchone()
    identity_changed = row is not None and bytes(row[0]) != upload.identity_key

    key_ids = [k.key_id for k in upload.one_time_prekeys]
    # An id twice in one upload is as ambiguous as one uploaded before.
    reused = {key_id for key_id, n in Counter(key_ids).items() if n > 1}
    if row is not None and not identity_changed:
        # Used keys are kept (used = true), so this also catches consumed ids.
        reused.update(
            int(r[0])
            for r in conn.execute(
                "SELECT key_id FROM one_time_prekeys"
                " WHERE device_id = %s AND key_id = ANY(%b::bigint[])",
                (device_id, key_ids),
            )
        )
    if reused:
        raise KeyIdReused(sorted(reused))  # before any write: nothing changes

    if identity_changed:
        # Keys and used ids belong to the old identity; a new identity
        # starts from a clean slate (its ids may repeat the old ones).
        conn.execute("DELETE FROM one_time_prekeys WHERE device_id = %s", (device_id,))
    spk = upload.signed_prekey
    conn.execute(
        "INSERT INTO device_keys (device_id, identity_key, signed_prekey_id, signed_prekey,"
        " signed_prekey_signature, signed_prekey_uploaded_at) VALUES (%s, %s, %s, %s, %s, %s)"
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
        (device_id, upload.identity_key, spk.key_id, spk.public_key, spk.signature, float(now)),
    )
    conn.execute(
        "INSERT INTO one_time_prekeys (device_id, key_id, public_key)"
        " SELECT %s, * FROM unnest(%b::bigint[], %b::bytea[])",
        (device_id, key_ids, [k.public_key for k in upload.one_time_prekeys]),
    )
    return PutKeysResult(
        identity_changed=identity_changed,
        one_time_prekeys=_unused_counts(conn, [device_id])[device_id],
    )


def fetch_bundles(conn: Conn, user_id: str, device_id: str | None) -> list[Bundle]:
    if not storable(user_id, device_id):
        return []
    rows = conn.execute(
        "SELECT d.id, k.identity_key, k.signed_prekey_id, k.signed_prekey,"
        " k.signed_prekey_signature"
        " FROM devices AS d JOIN device_keys AS k ON k.device_id = d.id"
        " WHERE d.user_id = %s AND (%s::text IS NULL OR d.id = %s)"
        " ORDER BY d.created_at, d.ord FOR SHARE OF k",
        (user_id, device_id, device_id),
    ).fetchall()
    if not rows:
        return []
    device_ids = [r[0] for r in rows]
    # One statement for every device: pick each one's lowest key nobody else
    # is taking right now, and mark it used.
    taken = conn.execute(
        "UPDATE one_time_prekeys AS o SET used = true FROM ("
        "  SELECT pick.device_id, pick.key_id FROM unnest(%b::text[]) AS wanted(device_id)"
        "  CROSS JOIN LATERAL (SELECT device_id, key_id FROM one_time_prekeys AS k"
        "    WHERE k.device_id = wanted.device_id AND NOT k.used"
        "    ORDER BY k.key_id LIMIT 1 FOR UPDATE SKIP LOCKED) AS pick"
        ") AS chosen WHERE o.device_id = chosen.device_id AND o.key_id = chosen.key_id"
        " RETURNING o.device_id, o.key_id, o.public_key",
        (device_ids,),
    ).fetchall()
    one_time = {r[0]: OneTimePrekey(key_id=int(r[1]), public_key=bytes(r[2])) for r in taken}
    remaining = _unused_counts(conn, device_ids)
    return [
        Bundle(
            device_id=dev_id,
            identity_key=bytes(identity_key),
            signed_prekey=SignedPrekey(
                key_id=int(spk_id), public_key=bytes(spk_public), signature=bytes(spk_signature)
            ),
            one_time_prekey=one_time.get(dev_id),
            remaining=remaining[dev_id],
        )
        for dev_id, identity_key, spk_id, spk_public, spk_signature in rows
    ]


def prekey_status(conn: Conn, device_id: str) -> PrekeyStatus:
    row = conn.execute(
        "SELECT signed_prekey_uploaded_at FROM device_keys WHERE device_id = %s", (device_id,)
    ).fetchone()
    return PrekeyStatus(
        one_time_prekeys=_unused_counts(conn, [device_id])[device_id],
        signed_prekey_uploaded_at=None if row is None else float(row[0]),
    )
