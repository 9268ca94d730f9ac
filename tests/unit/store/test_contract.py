"""The Store contract: what every adapter must do (see ``relay/store/_port.py``).

Each test takes ``store`` (an open store on an empty database) or
``backend`` (to open, close and reopen one database), and so runs once per
adapter registered in ``conftest.py``. Times are explicit Unix seconds.
SQLite-only checks (pragmas, migrations) are at the end.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from relay.store import (
    Device,
    Enqueued,
    KeyIdReused,
    KeyUpload,
    NewMessage,
    OneTimePrekey,
    Outgoing,
    QueueFull,
    QueueLimits,
    RefreshOutcome,
    Session,
    SignedPrekey,
    Store,
    StoreError,
    StoreUnavailable,
    Unroutable,
    User,
    UsernameTaken,
    open_sqlite_store,
)
from relay.store._migrations import LATEST_VERSION, MIGRATIONS, SchemaVersionError, migrate

from .conftest import Backend

T0 = 1_700_000_000.0
HOUR = 3_600.0
DAY = 86_400.0

IDENTITY_A = b"A" * 32
IDENTITY_B = b"B" * 32


# -- helpers ------------------------------------------------------------------


async def new_user(store: Store, name: str = "alice", now: float = T0) -> User:
    return await store.create_user(name, b"hash-of-" + name.encode(), now)


async def new_device(store: Store, user: User, name: str = "phone", now: float = T0) -> Device:
    return await store.create_device(user.id, name, now)


async def new_session(
    store: Store, device: Device, refresh: bytes = b"r0", now: float = T0, ttl: float = DAY
) -> Session:
    return await store.create_session(device.user_id, device.id, refresh, now, now + ttl)


def one_time(key_id: int) -> OneTimePrekey:
    return OneTimePrekey(key_id=key_id, public_key=key_id.to_bytes(4, "big") * 8)


def keys(
    identity: bytes = IDENTITY_A, signed_id: int = 1, one_time_ids: Iterable[int] = ()
) -> KeyUpload:
    return KeyUpload(
        identity_key=identity,
        signed_prekey=SignedPrekey(
            key_id=signed_id, public_key=bytes([signed_id]) * 32, signature=b"s" * 64
        ),
        one_time_prekeys=[one_time(i) for i in one_time_ids],
    )


@dataclass(frozen=True)
class Cast:
    """Alice (one phone) writes to Bob (a phone and a laptop)."""

    alice: User
    alice_phone: Device
    bob: User
    bob_phone: Device
    bob_laptop: Device

    def message(
        self,
        client_id: str,
        targets: Sequence[Device] | None = None,
        body: str | None = None,
        sender: Device | None = None,
        expires_at: float = T0 + DAY,
    ) -> NewMessage:
        sender = sender or self.alice_phone
        return NewMessage(
            sender_user_id=sender.user_id,
            sender_device_id=sender.id,
            sender_username="alice" if sender.user_id == self.alice.id else "bob",
            client_id=client_id,
            recipient_user_id=self.bob.id,
            target_device_ids=[d.id for d in (targets or [self.bob_phone, self.bob_laptop])],
            body=body if body is not None else f"body of {client_id}",
            sent_at=T0,
            expires_at=expires_at,
        )


@pytest.fixture
async def cast(store: Store) -> Cast:
    alice = await new_user(store, "alice")
    bob = await new_user(store, "bob")
    return Cast(
        alice=alice,
        alice_phone=await new_device(store, alice, "phone", T0),
        bob=bob,
        bob_phone=await new_device(store, bob, "phone", T0 + 1),
        bob_laptop=await new_device(store, bob, "laptop", T0 + 2),
    )


async def bodies(store: Store, device: Device, after_seq: int = 0, limit: int = 100) -> list[str]:
    return [m.body for m in await store.pending(device.id, after_seq, limit)]


# -- health -------------------------------------------------------------------


async def test_ping_returns_when_the_store_answers(store: Store) -> None:
    """An open store answers ping (None), and goes on serving."""
    assert await store.ping() is None
    user = await new_user(store)
    assert await store.get_user(user.id) == user


async def test_aclose_is_idempotent(backend: Backend) -> None:
    """Closing twice is harmless; the store stays closed (unavailable)."""
    async with backend.open() as store:
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreUnavailable):
            await store.ping()


# -- users --------------------------------------------------------------------


async def test_create_user_returns_the_stored_user(store: Store) -> None:
    """A new user comes back with an id and exactly the given fields."""
    user = await store.create_user("alice", b"argon2-hash", T0)
    assert user.id
    assert (user.username, user.password_hash, user.created_at) == ("alice", b"argon2-hash", T0)
    assert await store.get_user(user.id) == user


async def test_get_user_by_name_finds_the_user(store: Store) -> None:
    """A user is found by its username."""
    user = await new_user(store, "alice")
    assert await store.get_user_by_name("alice") == user


async def test_unknown_user_is_none(store: Store) -> None:
    """Looking up a user that does not exist gives None, by id or by name."""
    assert await store.get_user("no-such-id") is None
    assert await store.get_user_by_name("nobody") is None


async def test_create_user_with_a_taken_username_raises(store: Store) -> None:
    """A second user with the same name is refused with UsernameTaken."""
    await new_user(store, "alice")
    with pytest.raises(UsernameTaken):
        await new_user(store, "alice")


async def test_usernames_are_stored_and_matched_as_given(store: Store) -> None:
    """The store does not case-fold: that is the caller's job."""
    user = await new_user(store, "Alice")
    assert user.username == "Alice"
    assert await store.get_user_by_name("alice") is None


async def test_user_ids_are_distinct(store: Store) -> None:
    """Every user gets its own id."""
    ids = {(await new_user(store, f"user{i}")).id for i in range(10)}
    assert len(ids) == 10


# -- devices ------------------------------------------------------------------


async def test_create_device_is_last_seen_at_creation(store: Store) -> None:
    """A new device belongs to its user and was last seen when created."""
    user = await new_user(store)
    device = await store.create_device(user.id, "phone", T0)
    assert (device.user_id, device.name, device.created_at, device.last_seen_at) == (
        user.id,
        "phone",
        T0,
        T0,
    )
    assert await store.get_device(device.id) == device


async def test_create_device_for_an_unknown_user_raises(store: Store) -> None:
    """A device needs an existing user."""
    with pytest.raises(StoreError):
        await store.create_device("no-such-user", "phone", T0)


async def test_unknown_device_is_none(store: Store) -> None:
    """Looking up a device that does not exist gives None."""
    assert await store.get_device("no-such-device") is None


async def test_list_devices_is_oldest_first(store: Store) -> None:
    """Devices are listed by creation time, ties in creation order."""
    user = await new_user(store)
    second = await new_device(store, user, "second", T0 + 10)
    first = await new_device(store, user, "first", T0)
    tied = await new_device(store, user, "tied", T0 + 10)
    assert await store.list_devices(user.id) == [first, second, tied]


async def test_list_and_count_devices_cover_only_the_users_own(store: Store) -> None:
    """Other users' devices are neither listed nor counted."""
    alice, bob = await new_user(store, "alice"), await new_user(store, "bob")
    phone = await new_device(store, alice)
    await new_device(store, bob)
    await new_device(store, bob)
    assert await store.list_devices(alice.id) == [phone]
    assert await store.count_devices(alice.id) == 1
    assert await store.count_devices(bob.id) == 2
    assert await store.count_devices("no-such-user") == 0


async def test_delete_device_returns_the_ids_of_its_active_sessions(store: Store) -> None:
    """Only sessions still active at *now* are reported."""
    user = await new_user(store)
    device = await new_device(store, user)
    active = await new_session(store, device, b"r1")
    revoked = await new_session(store, device, b"r2")
    await store.revoke_session(revoked.id, T0 + 1)
    await new_session(store, device, b"r3", ttl=HOUR)  # expired by T0 + 2 * HOUR
    assert await store.delete_device(user.id, device.id, T0 + 2 * HOUR) == [active.id]


async def test_delete_device_removes_the_device_and_its_sessions(store: Store) -> None:
    """The device and every session on it are gone; other devices keep theirs."""
    user = await new_user(store)
    device, other = await new_device(store, user, "a"), await new_device(store, user, "b")
    doomed = await new_session(store, device, b"r1")
    kept = await new_session(store, other, b"r2")
    await store.delete_device(user.id, device.id, T0 + 1)
    assert await store.get_device(device.id) is None
    assert await store.get_session(doomed.id) is None
    assert await store.list_devices(user.id) == [other]
    assert await store.list_sessions(user.id, T0 + 1) == [kept]


async def test_delete_device_makes_its_refresh_tokens_invalid(store: Store) -> None:
    """A refresh token of a deleted device's session no longer works."""
    user = await new_user(store)
    device = await new_device(store, user)
    await new_session(store, device, b"r1")
    await store.delete_device(user.id, device.id, T0 + 1)
    result = await store.rotate_refresh(b"r1", b"r2", T0 + 2, T0 + DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)


async def test_rotate_refresh_caps_expiry_at_the_sessions_max_age(store: Store) -> None:
    """With max_age, the new expiry is never past created_at + max_age."""
    user = await new_user(store)
    device = await new_device(store, user)
    await new_session(store, device, b"r1")
    result = await store.rotate_refresh(b"r1", b"r2", T0 + HOUR, T0 + HOUR + DAY, max_age=2 * HOUR)
    assert result.outcome is RefreshOutcome.ROTATED
    assert result.session is not None and result.session.expires_at == T0 + 2 * HOUR


async def test_rotate_refresh_past_the_max_age_is_invalid(store: Store) -> None:
    """A session older than max_age cannot be refreshed, however recently it was."""
    user = await new_user(store)
    device = await new_device(store, user)
    await new_session(store, device, b"r1", ttl=10 * DAY)
    await store.rotate_refresh(b"r1", b"r2", T0 + DAY, T0 + 2 * DAY, max_age=3 * DAY)
    await store.rotate_refresh(b"r2", b"r3", T0 + 2 * DAY, T0 + 3 * DAY, max_age=3 * DAY)
    result = await store.rotate_refresh(b"r3", b"r4", T0 + 3 * DAY, T0 + 4 * DAY, max_age=3 * DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)


async def test_delete_device_removes_its_keys(store: Store) -> None:
    """The deleted device's prekeys are gone."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(one_time_ids=[1, 2]), T0)
    await store.delete_device(user.id, device.id, T0 + 1)
    status = await store.prekey_status(device.id)
    assert (status.one_time_prekeys, status.signed_prekey_uploaded_at) == (0, None)
    assert await store.fetch_bundles(user.id, None) == []


async def test_delete_device_removes_its_queued_copies_only(store: Store, cast: Cast) -> None:
    """The deleted device's queue is gone; the other targets keep their copies."""
    await store.enqueue([cast.message("m1")], 100)
    await store.delete_device(cast.bob.id, cast.bob_laptop.id, T0 + 1)
    assert await store.pending(cast.bob_laptop.id, 0, 100) == []
    assert await bodies(store, cast.bob_phone) == ["body of m1"]


async def test_delete_device_of_another_user_is_refused(store: Store) -> None:
    """Deleting someone else's device returns None and deletes nothing."""
    alice, mallory = await new_user(store, "alice"), await new_user(store, "mallory")
    phone = await new_device(store, alice)
    session = await new_session(store, phone)
    assert await store.delete_device(mallory.id, phone.id, T0 + 1) is None
    assert await store.get_device(phone.id) == phone
    assert await store.get_session(session.id) == session


async def test_delete_unknown_device_returns_none(store: Store) -> None:
    """Deleting a device that does not exist returns None."""
    user = await new_user(store)
    assert await store.delete_device(user.id, "no-such-device", T0) is None


async def test_revoked_since_reports_sessions_ended_by_delete_device(store: Store) -> None:
    """A deleted device's live sessions count as revoked then, so restarts keep refusing them."""
    user = await new_user(store)
    device = await new_device(store, user)
    session = await new_session(store, device)
    await store.delete_device(user.id, device.id, T0 + 5)
    assert [(s.id, s.revoked_at) for s in await store.revoked_since(T0)] == [(session.id, T0 + 5)]


# -- sessions -----------------------------------------------------------------


async def test_create_session_is_active_until_it_expires(store: Store) -> None:
    """A new session is active, last used at creation, and expires when told."""
    user = await new_user(store)
    device = await new_device(store, user)
    session = await store.create_session(user.id, device.id, b"r0", T0, T0 + DAY)
    assert (session.user_id, session.device_id) == (user.id, device.id)
    assert (session.created_at, session.last_used_at, session.expires_at) == (T0, T0, T0 + DAY)
    assert session.revoked_at is None
    assert session.active(T0) and not session.active(T0 + DAY)
    assert await store.get_session(session.id) == session


async def test_create_session_on_another_users_device_raises(store: Store) -> None:
    """A session's device must belong to its user."""
    alice, mallory = await new_user(store, "alice"), await new_user(store, "mallory")
    phone = await new_device(store, alice)
    with pytest.raises(StoreError):
        await store.create_session(mallory.id, phone.id, b"r0", T0, T0 + DAY)


async def test_unknown_session_is_none(store: Store) -> None:
    """Looking up a session that does not exist gives None."""
    assert await store.get_session("no-such-session") is None


async def test_list_sessions_is_active_sessions_on_all_devices_oldest_first(store: Store) -> None:
    """Active sessions of every device of the user, by creation time."""
    user = await new_user(store)
    phone, laptop = await new_device(store, user, "phone"), await new_device(store, user, "laptop")
    later = await new_session(store, phone, b"r1", now=T0 + 2)
    earlier = await new_session(store, laptop, b"r2", now=T0 + 1)
    assert await store.list_sessions(user.id, T0 + 3) == [earlier, later]


async def test_list_sessions_leaves_out_revoked_and_expired(store: Store) -> None:
    """Revoked and expired sessions are not listed."""
    user = await new_user(store)
    device = await new_device(store, user)
    active = await new_session(store, device, b"r1")
    revoked = await new_session(store, device, b"r2")
    await store.revoke_session(revoked.id, T0 + 1)
    await new_session(store, device, b"r3", ttl=HOUR)
    assert await store.list_sessions(user.id, T0 + HOUR) == [active]


async def test_list_sessions_leaves_out_other_users(store: Store) -> None:
    """Only the user's own sessions are listed."""
    alice, bob = await new_user(store, "alice"), await new_user(store, "bob")
    await new_session(store, await new_device(store, bob), b"r1")
    assert await store.list_sessions(alice.id, T0) == []


async def test_rotate_current_token_rotates_and_extends_the_session(store: Store) -> None:
    """The current token is spent for the new one; expiry and last use move on."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    result = await store.rotate_refresh(b"r0", b"r1", T0 + HOUR, T0 + HOUR + DAY)
    assert result.outcome is RefreshOutcome.ROTATED
    expected = Session(
        id=session.id,
        user_id=session.user_id,
        device_id=session.device_id,
        created_at=T0,
        last_used_at=T0 + HOUR,
        expires_at=T0 + HOUR + DAY,
        revoked_at=None,
    )
    assert result.session == expected
    assert await store.get_session(session.id) == expected


async def test_rotated_in_token_is_the_new_current_one(store: Store) -> None:
    """The token handed out by a rotation rotates in turn."""
    await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    result = await store.rotate_refresh(b"r1", b"r2", T0 + 2, T0 + DAY)
    assert result.outcome is RefreshOutcome.ROTATED


async def test_rotate_spent_token_is_reuse_and_revokes_the_session(store: Store) -> None:
    """Presenting a spent token again revokes its session and says REUSED."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    result = await store.rotate_refresh(b"r0", b"r9", T0 + 2, T0 + DAY)
    assert result.outcome is RefreshOutcome.REUSED
    assert result.session is not None
    assert (result.session.id, result.session.revoked_at) == (session.id, T0 + 2)
    stored = await store.get_session(session.id)
    assert stored is not None and stored.revoked_at == T0 + 2


async def test_after_reuse_the_current_token_is_invalid_too(store: Store) -> None:
    """Once reuse revoked the session, its current token no longer rotates."""
    await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    await store.rotate_refresh(b"r0", b"r9", T0 + 2, T0 + DAY)
    result = await store.rotate_refresh(b"r1", b"r2", T0 + 3, T0 + DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)


async def test_reuse_does_not_store_the_offered_new_token(store: Store) -> None:
    """The new hash offered with a reused token is not accepted later."""
    await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    await store.rotate_refresh(b"r0", b"r9", T0 + 2, T0 + DAY)
    result = await store.rotate_refresh(b"r9", b"r10", T0 + 3, T0 + DAY)
    assert result.outcome is RefreshOutcome.INVALID


async def test_rotate_unknown_token_is_invalid(store: Store) -> None:
    """A hash the store never saw is INVALID, with no session."""
    result = await store.rotate_refresh(b"never-issued", b"r1", T0, T0 + DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)


async def test_rotate_token_of_an_expired_session_is_invalid(store: Store) -> None:
    """The current token of an expired session is INVALID and changes nothing."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    result = await store.rotate_refresh(b"r0", b"r1", T0 + DAY, T0 + 2 * DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)
    assert await store.get_session(session.id) == session


async def test_rotate_spent_token_of_an_expired_session_is_invalid(store: Store) -> None:
    """Reuse is not reported for a session that has expired anyway."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    result = await store.rotate_refresh(b"r0", b"r9", T0 + DAY, T0 + 2 * DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)
    stored = await store.get_session(session.id)
    assert stored is not None and stored.revoked_at is None


async def test_rotate_token_of_a_revoked_session_is_invalid(store: Store) -> None:
    """The current token of a revoked session is INVALID."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.revoke_session(session.id, T0 + 1)
    result = await store.rotate_refresh(b"r0", b"r1", T0 + 2, T0 + DAY)
    assert (result.outcome, result.session) == (RefreshOutcome.INVALID, None)


async def test_revoke_session_returns_it_as_it_was(store: Store) -> None:
    """Revoking returns the pre-revocation session and stores revoked_at."""
    session = await new_session(store, await new_device(store, await new_user(store)))
    assert await store.revoke_session(session.id, T0 + 5) == session
    stored = await store.get_session(session.id)
    assert stored is not None and stored.revoked_at == T0 + 5


async def test_revoke_session_for_its_own_user_works(store: Store) -> None:
    """Passing the owner's user id revokes as usual."""
    user = await new_user(store)
    session = await new_session(store, await new_device(store, user))
    assert await store.revoke_session(session.id, T0 + 5, user.id) == session


async def test_revoke_session_of_another_user_is_refused(store: Store) -> None:
    """A user id that does not own the session gets None and revokes nothing."""
    alice, mallory = await new_user(store, "alice"), await new_user(store, "mallory")
    session = await new_session(store, await new_device(store, alice))
    assert await store.revoke_session(session.id, T0 + 5, mallory.id) is None
    assert await store.get_session(session.id) == session


async def test_revoke_session_twice_returns_none_the_second_time(store: Store) -> None:
    """An already revoked session is not active: None, first revocation time kept."""
    session = await new_session(store, await new_device(store, await new_user(store)))
    await store.revoke_session(session.id, T0 + 5)
    assert await store.revoke_session(session.id, T0 + 6) is None
    stored = await store.get_session(session.id)
    assert stored is not None and stored.revoked_at == T0 + 5


async def test_revoke_expired_session_returns_none(store: Store) -> None:
    """An expired session is not active: None, and it is not marked revoked."""
    session = await new_session(store, await new_device(store, await new_user(store)), ttl=HOUR)
    assert await store.revoke_session(session.id, T0 + HOUR) is None
    assert await store.get_session(session.id) == session


async def test_revoke_unknown_session_returns_none(store: Store) -> None:
    """Revoking a session that does not exist returns None."""
    assert await store.revoke_session("no-such-session", T0) is None


async def test_revoked_since_returns_sessions_revoked_at_or_after(store: Store) -> None:
    """Revocations before *since* are left out; at *since* and later are in."""
    device = await new_device(store, await new_user(store))
    early, on_time, late, live = [
        await new_session(store, device, f"r{i}".encode()) for i in range(4)
    ]
    await store.revoke_session(early.id, T0 + 9)
    await store.revoke_session(on_time.id, T0 + 10)
    await store.revoke_session(late.id, T0 + 11)
    found = await store.revoked_since(T0 + 10)
    assert sorted(s.id for s in found) == sorted([on_time.id, late.id])
    assert all(s.revoked_at is not None and s.revoked_at >= T0 + 10 for s in found)
    assert live.id not in {s.id for s in found}


async def test_revoked_since_includes_reuse_revocations(store: Store) -> None:
    """A session revoked by refresh-token reuse is reported."""
    session = await new_session(store, await new_device(store, await new_user(store)), b"r0")
    await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
    await store.rotate_refresh(b"r0", b"r2", T0 + 2, T0 + DAY)
    assert [s.id for s in await store.revoked_since(T0)] == [session.id]


async def test_touch_session_records_use_of_session_and_device(store: Store) -> None:
    """Touching sets the session's last use and its device's last seen time."""
    device = await new_device(store, await new_user(store))
    session = await new_session(store, device)
    await store.touch_session(session.id, T0 + 60)
    stored_session, stored_device = (
        await store.get_session(session.id),
        await store.get_device(device.id),
    )
    assert stored_session is not None and stored_session.last_used_at == T0 + 60
    assert stored_device is not None and stored_device.last_seen_at == T0 + 60


async def test_touch_unknown_session_is_ignored(store: Store) -> None:
    """Touching a session that does not exist changes nothing and does not raise."""
    user = await new_user(store)
    device = await new_device(store, user)
    session = await new_session(store, device)
    await store.touch_session("no-such-session", T0 + HOUR)
    assert await store.list_sessions(user.id, T0) == [session]
    assert await store.list_devices(user.id) == [device]


# -- keys ---------------------------------------------------------------------


async def test_prekey_status_without_keys(store: Store) -> None:
    """A device that never uploaded keys has none and no upload time."""
    device = await new_device(store, await new_user(store))
    status = await store.prekey_status(device.id)
    assert (status.one_time_prekeys, status.signed_prekey_uploaded_at) == (0, None)


async def test_put_keys_first_upload_stores_the_bundle(store: Store) -> None:
    """A first upload is not an identity change and stores every one-time key."""
    user = await new_user(store)
    device = await new_device(store, user)
    result = await store.put_keys(device.id, keys(one_time_ids=[1, 2, 3]), T0)
    assert (result.identity_changed, result.one_time_prekeys) == (False, 3)
    status = await store.prekey_status(device.id)
    assert (status.one_time_prekeys, status.signed_prekey_uploaded_at) == (3, T0)
    [bundle] = await store.fetch_bundles(user.id, device.id)
    assert bundle.identity_key == IDENTITY_A
    assert bundle.signed_prekey == keys().signed_prekey


async def test_put_keys_same_identity_replaces_signed_prekey_and_adds_one_time_keys(
    store: Store,
) -> None:
    """Same identity: the new signed prekey wins and one-time keys accumulate."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(signed_id=1, one_time_ids=[1, 2]), T0)
    result = await store.put_keys(device.id, keys(signed_id=2, one_time_ids=[3]), T0 + HOUR)
    assert (result.identity_changed, result.one_time_prekeys) == (False, 3)
    status = await store.prekey_status(device.id)
    assert status.signed_prekey_uploaded_at == T0 + HOUR
    [bundle] = await store.fetch_bundles(user.id, device.id)
    assert bundle.signed_prekey == keys(signed_id=2).signed_prekey


async def test_put_keys_resending_the_same_signed_prekey_keeps_its_age(store: Store) -> None:
    """A refill that re-sends the current signed prekey does not restart its upload time."""
    device = await new_device(store, await new_user(store))
    await store.put_keys(device.id, keys(signed_id=1, one_time_ids=[1]), T0)
    await store.put_keys(device.id, keys(signed_id=1, one_time_ids=[2]), T0 + HOUR)
    assert (await store.prekey_status(device.id)).signed_prekey_uploaded_at == T0


async def test_put_keys_with_no_one_time_keys_only_refreshes_the_signed_prekey(
    store: Store,
) -> None:
    """An upload without one-time keys keeps the unused ones."""
    device = await new_device(store, await new_user(store))
    await store.put_keys(device.id, keys(signed_id=1, one_time_ids=[1, 2]), T0)
    result = await store.put_keys(device.id, keys(signed_id=2), T0 + 1)
    assert result.one_time_prekeys == 2


async def test_put_keys_with_a_new_identity_replaces_the_whole_bundle(store: Store) -> None:
    """A different identity key drops the old one-time keys and reports the change."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(IDENTITY_A, one_time_ids=[1, 2, 3]), T0)
    result = await store.put_keys(device.id, keys(IDENTITY_B, one_time_ids=[10]), T0 + 1)
    assert (result.identity_changed, result.one_time_prekeys) == (True, 1)
    [bundle] = await store.fetch_bundles(user.id, device.id)
    assert bundle.identity_key == IDENTITY_B
    assert bundle.one_time_prekey == one_time(10)


async def test_put_keys_with_a_new_identity_may_reuse_old_key_ids(store: Store) -> None:
    """Ids used under the old identity are free again under a new one."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(IDENTITY_A, one_time_ids=[1, 2]), T0)
    await store.fetch_bundles(user.id, device.id)  # consumes key 1
    result = await store.put_keys(device.id, keys(IDENTITY_B, one_time_ids=[1, 2]), T0 + 1)
    assert (result.identity_changed, result.one_time_prekeys) == (True, 2)


async def test_put_keys_reusing_an_unused_key_id_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    """An id still stored raises KeyIdReused; signed prekey and keys are untouched."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(signed_id=1, one_time_ids=[1, 2]), T0)
    with pytest.raises(KeyIdReused) as raised:
        await store.put_keys(device.id, keys(signed_id=2, one_time_ids=[2, 3]), T0 + 1)
    assert raised.value.key_ids == (2,)
    status = await store.prekey_status(device.id)
    assert (status.one_time_prekeys, status.signed_prekey_uploaded_at) == (2, T0)
    [bundle] = await store.fetch_bundles(user.id, device.id)
    assert bundle.signed_prekey == keys(signed_id=1).signed_prekey


async def test_put_keys_reusing_a_consumed_key_id_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    """An id already handed out raises KeyIdReused; nothing is stored."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(one_time_ids=[1, 2]), T0)
    await store.fetch_bundles(user.id, device.id)  # consumes key 1
    with pytest.raises(KeyIdReused) as raised:
        await store.put_keys(device.id, keys(one_time_ids=[1, 5]), T0 + 1)
    assert raised.value.key_ids == (1,)
    status = await store.prekey_status(device.id)
    assert (status.one_time_prekeys, status.signed_prekey_uploaded_at) == (1, T0)


async def test_put_keys_with_an_id_repeated_in_the_upload_is_refused(store: Store) -> None:
    """Two one-time keys with one id in the same upload raise KeyIdReused."""
    device = await new_device(store, await new_user(store))
    with pytest.raises(KeyIdReused) as raised:
        await store.put_keys(device.id, keys(one_time_ids=[4, 4, 5]), T0)
    assert raised.value.key_ids == (4,)
    assert (await store.prekey_status(device.id)).signed_prekey_uploaded_at is None


async def test_put_keys_for_an_unknown_device_raises(store: Store) -> None:
    """Keys need an existing device."""
    with pytest.raises(StoreError):
        await store.put_keys("no-such-device", keys(one_time_ids=[1]), T0)


async def test_fetch_bundles_consumes_the_lowest_key_id_first(store: Store) -> None:
    """One-time keys are handed out in key-id order, not upload order."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(one_time_ids=[7, 3, 5]), T0)
    handed_out = []
    for _ in range(3):
        [bundle] = await store.fetch_bundles(user.id, device.id)
        handed_out.append((bundle.one_time_prekey, bundle.remaining))
    assert handed_out == [(one_time(3), 2), (one_time(5), 1), (one_time(7), 0)]
    assert (await store.prekey_status(device.id)).one_time_prekeys == 0


async def test_fetch_bundles_without_one_time_keys_left_gives_none(store: Store) -> None:
    """When a device runs out, its bundle still comes, with no one-time key."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(one_time_ids=[1]), T0)
    await store.fetch_bundles(user.id, device.id)
    [bundle] = await store.fetch_bundles(user.id, device.id)
    assert (bundle.one_time_prekey, bundle.remaining) == (None, 0)
    assert bundle.identity_key == IDENTITY_A


async def test_fetch_bundles_covers_devices_with_keys_oldest_first(store: Store) -> None:
    """All of the user's devices with keys, oldest first, one key consumed from each."""
    user = await new_user(store)
    newer = await new_device(store, user, "newer", T0 + 2)
    older = await new_device(store, user, "older", T0 + 1)
    await new_device(store, user, "keyless", T0)
    await store.put_keys(newer.id, keys(IDENTITY_B, one_time_ids=[1, 2]), T0)
    await store.put_keys(older.id, keys(IDENTITY_A, one_time_ids=[1, 2]), T0)
    bundles = await store.fetch_bundles(user.id, None)
    assert [(b.device_id, b.identity_key) for b in bundles] == [
        (older.id, IDENTITY_A),
        (newer.id, IDENTITY_B),
    ]
    assert [(b.one_time_prekey, b.remaining) for b in bundles] == [(one_time(1), 1)] * 2


async def test_fetch_bundles_of_one_device_consumes_only_its_keys(store: Store) -> None:
    """Asking for one device returns and consumes only that device's bundle."""
    user = await new_user(store)
    phone, laptop = await new_device(store, user, "phone"), await new_device(store, user, "laptop")
    await store.put_keys(phone.id, keys(one_time_ids=[1]), T0)
    await store.put_keys(laptop.id, keys(one_time_ids=[1]), T0)
    assert [b.device_id for b in await store.fetch_bundles(user.id, laptop.id)] == [laptop.id]
    assert (await store.prekey_status(phone.id)).one_time_prekeys == 1


async def test_fetch_bundles_of_a_device_the_user_does_not_own_is_empty(store: Store) -> None:
    """Naming another user's device gives nothing and consumes nothing."""
    alice, bob = await new_user(store, "alice"), await new_user(store, "bob")
    bobs = await new_device(store, bob)
    await store.put_keys(bobs.id, keys(one_time_ids=[1]), T0)
    assert await store.fetch_bundles(alice.id, bobs.id) == []
    assert (await store.prekey_status(bobs.id)).one_time_prekeys == 1


async def test_fetch_bundles_of_a_user_without_keys_is_empty(store: Store) -> None:
    """A user whose devices uploaded no keys (or an unknown user) has no bundles."""
    user = await new_user(store)
    device = await new_device(store, user)
    assert await store.fetch_bundles(user.id, None) == []
    assert await store.fetch_bundles(user.id, device.id) == []
    assert await store.fetch_bundles("no-such-user", None) == []


async def test_concurrent_fetches_hand_out_each_one_time_key_once(store: Store) -> None:
    """20 concurrent fetches of 5 keys: each key exactly once, the other 15 get None."""
    user = await new_user(store)
    device = await new_device(store, user)
    await store.put_keys(device.id, keys(one_time_ids=range(1, 6)), T0)
    got: list[OneTimePrekey | None] = []

    async def fetch() -> None:
        [bundle] = await store.fetch_bundles(user.id, device.id)
        got.append(bundle.one_time_prekey)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(fetch)
    assert sorted(k.key_id for k in got if k is not None) == [1, 2, 3, 4, 5]
    assert got.count(None) == 15


async def test_concurrent_fetches_through_two_stores_hand_out_each_key_once(
    backend: Backend,
) -> None:
    """Two stores on one database (two processes) never share a one-time key."""
    async with backend.open() as first, backend.open() as second:
        user = await new_user(first)
        device = await new_device(first, user)
        await first.put_keys(device.id, keys(one_time_ids=range(1, 11)), T0)
        got: list[OneTimePrekey | None] = []

        async def fetch(store: Store) -> None:
            [bundle] = await store.fetch_bundles(user.id, device.id)
            got.append(bundle.one_time_prekey)

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(fetch, (first, second)[i % 2])
    assert sorted(k.key_id for k in got if k is not None) == list(range(1, 11))
    assert got.count(None) == 6


# -- messages: enqueue --------------------------------------------------------


async def test_enqueue_queues_a_copy_for_each_target(store: Store, cast: Cast) -> None:
    """Every target device gets the message, with its sender and metadata."""
    [result] = await store.enqueue([cast.message("m1")], 100)
    assert result.duplicate is False
    assert result.target_device_ids == (cast.bob_phone.id, cast.bob_laptop.id)
    for device in (cast.bob_phone, cast.bob_laptop):
        [queued] = await store.pending(device.id, 0, 100)
        assert (queued.message_id, queued.seq, queued.device_id) == (
            result.message_id,
            result.seq,
            device.id,
        )
        assert (queued.sender_user_id, queued.sender_device_id, queued.client_id) == (
            cast.alice.id,
            cast.alice_phone.id,
            "m1",
        )
        assert (queued.body, queued.sent_at) == ("body of m1", T0)


async def test_enqueue_seq_increases_in_acceptance_order(store: Store, cast: Cast) -> None:
    """seq strictly increases within a batch and across batches; ids are distinct."""
    first = await store.enqueue([cast.message("m1"), cast.message("m2")], 100)
    second = await store.enqueue([cast.message("m3")], 100)
    seqs = [r.seq for r in first + second]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert len({r.message_id for r in first + second}) == 3


async def test_enqueue_results_follow_the_batch_order(store: Store, cast: Cast) -> None:
    """Result i answers message i."""
    results = await store.enqueue([cast.message(f"m{i}") for i in range(5)], 100)
    by_id = {m.message_id: m.client_id for m in await store.pending(cast.bob_phone.id, 0, 100)}
    assert [by_id[r.message_id] for r in results] == [f"m{i}" for i in range(5)]


async def test_enqueue_repeated_client_id_is_a_duplicate_storing_nothing(
    store: Store, cast: Cast
) -> None:
    """A resend returns the original id and seq, flagged duplicate, and queues nothing new."""
    [original] = await store.enqueue([cast.message("m1", body="first")], 100)
    [again] = await store.enqueue([cast.message("m1", body="second")], 100)
    assert again.duplicate is True
    assert (again.message_id, again.seq, again.target_device_ids) == (
        original.message_id,
        original.seq,
        original.target_device_ids,
    )
    assert await bodies(store, cast.bob_phone) == ["first"]


async def test_enqueue_duplicate_reports_the_original_targets(store: Store, cast: Cast) -> None:
    """A resend to other devices still answers with the original's targets."""
    [original] = await store.enqueue([cast.message("m1", targets=[cast.bob_phone])], 100)
    [again] = await store.enqueue([cast.message("m1", targets=[cast.bob_laptop])], 100)
    assert again.target_device_ids == original.target_device_ids == (cast.bob_phone.id,)
    assert await store.pending(cast.bob_laptop.id, 0, 100) == []


async def test_enqueue_duplicate_is_recognised_after_delivery(store: Store, cast: Cast) -> None:
    """Acking every copy does not forget the idempotency record."""
    [original] = await store.enqueue([cast.message("m1")], 100)
    await store.ack(cast.bob_phone.id, [original.message_id])
    await store.ack(cast.bob_laptop.id, [original.message_id])
    [again] = await store.enqueue([cast.message("m1")], 100)
    assert (again.duplicate, again.message_id) == (True, original.message_id)
    assert await store.pending(cast.bob_phone.id, 0, 100) == []


async def test_enqueue_duplicate_within_one_batch(store: Store, cast: Cast) -> None:
    """The second copy of a client id in the same batch is a duplicate of the first."""
    first, second = await store.enqueue([cast.message("m1"), cast.message("m1")], 100)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert (second.message_id, second.seq) == (first.message_id, first.seq)
    assert await bodies(store, cast.bob_phone) == ["body of m1"]


async def test_same_client_id_from_another_device_is_not_a_duplicate(
    store: Store, cast: Cast
) -> None:
    """Idempotency is per sender device."""
    alice_laptop = await new_device(store, cast.alice, "laptop")
    first, second = await store.enqueue(
        [cast.message("m1"), cast.message("m1", sender=alice_laptop)], 100
    )
    assert second.duplicate is False and second.message_id != first.message_id
    assert len(await store.pending(cast.bob_phone.id, 0, 100)) == 2


async def test_enqueue_refuses_a_message_for_a_full_queue(store: Store, cast: Cast) -> None:
    """At max_per_device the next message is refused whole; nothing queued is dropped."""
    target = [cast.bob_phone]
    await store.enqueue([cast.message(f"m{i}", targets=target) for i in range(3)], 3)
    [result] = await store.enqueue([cast.message("m3", targets=target)], 3)
    assert result == QueueFull(device_id=cast.bob_phone.id, sender_share=False)
    assert await bodies(store, cast.bob_phone) == [f"body of m{i}" for i in range(3)]


async def test_a_refused_message_stores_nothing_anywhere(store: Store, cast: Cast) -> None:
    """One full target refuses the message for every target, with no idempotency record."""
    await store.enqueue([cast.message("m0", targets=[cast.bob_phone])], 1)
    [result] = await store.enqueue([cast.message("m1")], 1)
    assert isinstance(result, QueueFull)
    assert await store.pending(cast.bob_laptop.id, 0, 100) == []
    queued = await store.pending(cast.bob_phone.id, 0, 9)
    await store.ack(cast.bob_phone.id, [m.message_id for m in queued])
    [retry] = await store.enqueue([cast.message("m1")], 1)
    assert isinstance(retry, Enqueued) and retry.duplicate is False


async def test_enqueue_refuses_within_a_batch_once_full(store: Store, cast: Cast) -> None:
    """A batch fills the queue as it goes: later messages of the same batch are refused."""
    target = [cast.bob_phone]
    results = await store.enqueue([cast.message(f"m{i}", targets=target) for i in range(4)], 2)
    assert [isinstance(r, QueueFull) for r in results] == [False, False, True, True]
    assert await bodies(store, cast.bob_phone) == ["body of m0", "body of m1"]


async def test_a_sender_cannot_fill_more_than_its_share(store: Store, cast: Cast) -> None:
    """Past max_per_sender copies from one user, that user is refused; others still get in."""
    target = [cast.bob_phone]
    carol = await new_user(store, "carol")
    carol_phone = await new_device(store, carol)
    batch = [cast.message(f"a{i}", targets=target) for i in range(3)]
    results = await store.enqueue(batch, 100, max_per_sender=2)
    assert results[2] == QueueFull(device_id=cast.bob_phone.id, sender_share=True)
    [from_carol] = await store.enqueue(
        [cast.message("c0", targets=target, sender=carol_phone)], 100, 2
    )
    assert isinstance(from_carol, Enqueued)


async def test_the_sender_share_counts_all_the_senders_devices(store: Store, cast: Cast) -> None:
    """Messages from two devices of one user share that user's quota."""
    alice_laptop = await new_device(store, cast.alice, "laptop")
    target = [cast.bob_phone]
    first = await store.enqueue([cast.message("m0", targets=target)], 100, max_per_sender=1)
    second = await store.enqueue(
        [cast.message("m1", targets=target, sender=alice_laptop)], 100, max_per_sender=1
    )
    assert isinstance(first[0], Enqueued) and isinstance(second[0], QueueFull)


async def test_a_duplicate_is_answered_when_the_queue_is_full(store: Store, cast: Cast) -> None:
    """A resend of a stored message is its duplicate, not a refusal."""
    target = [cast.bob_phone]
    [original] = await store.enqueue([cast.message("m0", targets=target)], 1)
    [again] = await store.enqueue([cast.message("m0", targets=target)], 1)
    assert isinstance(again, Enqueued) and again.duplicate and again.seq == original.seq


async def test_enqueue_skips_target_devices_that_no_longer_exist(store: Store, cast: Cast) -> None:
    """A deleted target gets no copy and is not reported as a target."""
    await store.delete_device(cast.bob.id, cast.bob_laptop.id, T0)
    [result] = await store.enqueue([cast.message("m1")], 100)
    assert result.target_device_ids == (cast.bob_phone.id,)


# -- messages: pending, ack, purge -----------------------------------------------


async def test_pending_is_in_seq_order(store: Store, cast: Cast) -> None:
    """Queued messages come out in acceptance order."""
    for i in range(3):
        await store.enqueue([cast.message(f"m{i}")], 100)
    queued = await store.pending(cast.bob_phone.id, 0, 100)
    assert [m.client_id for m in queued] == ["m0", "m1", "m2"]
    assert [m.seq for m in queued] == sorted(m.seq for m in queued)


async def test_pending_carries_the_sender(store: Store, cast: Cast) -> None:
    """A queued message names its sender's username and device."""
    await store.enqueue([cast.message("m1")], 100)
    [queued] = await store.pending(cast.bob_phone.id, 0, 10)
    assert (queued.sender_username, queued.sender_device_id) == ("alice", cast.alice_phone.id)
    assert queued.sender_user_id == cast.alice.id


async def test_resolve_users_maps_names_to_ids_and_devices(store: Store, cast: Cast) -> None:
    """Known usernames map to (user id, device ids oldest first); unknown ones are absent."""
    found = await store.resolve_users(["bob", "alice", "nobody"])
    assert found == {
        "bob": (cast.bob.id, [cast.bob_phone.id, cast.bob_laptop.id]),
        "alice": (cast.alice.id, [cast.alice_phone.id]),
    }


async def test_resolve_users_includes_users_without_devices(store: Store) -> None:
    """A user with no device resolves to an empty device list."""
    user = await store.create_user("carol", b"h", T0)
    assert await store.resolve_users(["carol"]) == {"carol": (user.id, [])}


async def test_pending_starts_after_after_seq(store: Store, cast: Cast) -> None:
    """Only messages with seq greater than after_seq are returned."""
    results = await store.enqueue([cast.message(f"m{i}") for i in range(3)], 100)
    assert await bodies(store, cast.bob_phone, after_seq=results[0].seq) == [
        "body of m1",
        "body of m2",
    ]
    assert await bodies(store, cast.bob_phone, after_seq=results[2].seq) == []


async def test_pending_returns_at_most_limit(store: Store, cast: Cast) -> None:
    """limit caps the page, taking the oldest first."""
    await store.enqueue([cast.message(f"m{i}") for i in range(5)], 100)
    assert await bodies(store, cast.bob_phone, limit=2) == ["body of m0", "body of m1"]
    assert await bodies(store, cast.bob_phone, limit=0) == []


async def test_pending_is_per_device(store: Store, cast: Cast) -> None:
    """A device sees only the copies queued for it."""
    await store.enqueue([cast.message("m1", targets=[cast.bob_phone])], 100)
    assert await bodies(store, cast.bob_phone) == ["body of m1"]
    assert await bodies(store, cast.bob_laptop) == []


async def test_ack_many_acks_several_devices_at_once(store: Store, cast: Cast) -> None:
    """ack_many removes each device's named copies in one call and counts them all."""
    results = await store.enqueue([cast.message(f"m{i}") for i in range(2)], 100)
    acked = await store.ack_many(
        [
            (cast.bob_phone.id, [results[0].message_id]),
            (cast.bob_laptop.id, [results[0].message_id, results[1].message_id]),
        ]
    )
    assert acked == 3
    assert await bodies(store, cast.bob_phone) == ["body of m1"]
    assert await bodies(store, cast.bob_laptop) == []


async def test_ack_removes_the_devices_copies_and_counts_them(store: Store, cast: Cast) -> None:
    """Acked copies are gone from the device's queue; the count is returned."""
    results = await store.enqueue([cast.message(f"m{i}") for i in range(3)], 100)
    acked = await store.ack(cast.bob_phone.id, [results[0].message_id, results[2].message_id])
    assert acked == 2
    assert await bodies(store, cast.bob_phone) == ["body of m1"]


async def test_ack_leaves_other_devices_copies(store: Store, cast: Cast) -> None:
    """One device's ack does not touch another device's copy."""
    [result] = await store.enqueue([cast.message("m1")], 100)
    await store.ack(cast.bob_phone.id, [result.message_id])
    assert await bodies(store, cast.bob_laptop) == ["body of m1"]


async def test_a_body_is_dropped_once_every_copy_is_acked(
    backend: Backend, store: Store, cast: Cast
) -> None:
    """Delivered everywhere: the ciphertext goes; the id still answers a resend as a duplicate."""
    [sent] = await store.enqueue([cast.message("m1")], 100)
    await store.ack(cast.bob_phone.id, [sent.message_id])
    assert backend.kept_bodies() == ["body of m1"]  # the laptop still waits for it
    await store.ack_many([(cast.bob_laptop.id, [sent.message_id])])
    assert backend.kept_bodies() == []
    [again] = await store.enqueue([cast.message("m1")], 100)
    assert again.duplicate and again.message_id == sent.message_id


async def test_deleting_the_last_waiting_device_drops_the_body(
    backend: Backend, store: Store, cast: Cast
) -> None:
    """A copy deleted with its device counts as gone: nobody can be sent the body any more."""
    [sent] = await store.enqueue([cast.message("m1")], 100)
    await store.enqueue([cast.message("m2", targets=[cast.bob_laptop])], 100)
    await store.ack(cast.bob_phone.id, [sent.message_id])
    assert await store.delete_device(cast.bob.id, cast.bob_laptop.id, T0) is not None
    assert backend.kept_bodies() == []


async def test_ack_ignores_unknown_and_already_acked_ids(store: Store, cast: Cast) -> None:
    """Ids never queued for the device, or already acked, count for nothing."""
    [mine] = await store.enqueue([cast.message("m1")], 100)
    [laptops] = await store.enqueue([cast.message("m2", targets=[cast.bob_laptop])], 100)
    assert await store.ack(cast.bob_phone.id, ["no-such-id", laptops.message_id]) == 0
    assert await store.ack(cast.bob_phone.id, [mine.message_id, mine.message_id]) == 1
    assert await store.ack(cast.bob_phone.id, [mine.message_id]) == 0
    assert await store.ack(cast.bob_phone.id, []) == 0
    assert await bodies(store, cast.bob_laptop) == ["body of m1", "body of m2"]


async def test_purge_expired_drops_expired_copies_and_counts_them(store: Store, cast: Cast) -> None:
    """Copies of messages expired at *now* are dropped; live ones stay."""
    await store.enqueue([cast.message("old", expires_at=T0 + HOUR)], 100)
    await store.enqueue([cast.message("new", expires_at=T0 + DAY)], 100)
    assert await store.purge_expired(T0 + HOUR) == 2  # one message, two copies
    assert await bodies(store, cast.bob_phone) == ["body of new"]
    assert await store.purge_expired(T0 + HOUR) == 0


async def test_purge_expired_forgets_the_idempotency_record(store: Store, cast: Cast) -> None:
    """After expiry a resend of the same client id is a new message."""
    [original] = await store.enqueue([cast.message("m1", expires_at=T0 + HOUR)], 100)
    await store.purge_expired(T0 + HOUR)
    [again] = await store.enqueue([cast.message("m1", expires_at=T0 + DAY)], 100)
    assert again.duplicate is False and again.seq > original.seq


async def test_seq_keeps_increasing_after_the_newest_messages_are_purged(
    store: Store, cast: Cast
) -> None:
    """A purged seq is never handed out again: clients resume from after_seq."""
    [first] = await store.enqueue([cast.message("m1", expires_at=T0 + HOUR)], 100)
    await store.purge_expired(T0 + HOUR)
    [second] = await store.enqueue([cast.message("m2")], 100)
    assert second.seq > first.seq


async def test_messages_outlive_the_sender_device(store: Store, cast: Cast) -> None:
    """Deleting the sender's device leaves its queued messages for the recipients."""
    await store.enqueue([cast.message("m1")], 100)
    await store.delete_device(cast.alice.id, cast.alice_phone.id, T0 + 1)
    assert await bodies(store, cast.bob_phone) == ["body of m1"]


# -- persistence --------------------------------------------------------------


async def test_everything_survives_close_and_reopen(backend: Backend) -> None:
    """Users, devices, sessions, keys and queues are all there after a reopen."""
    async with backend.open() as store:
        alice = await new_user(store, "alice")
        phone = await new_device(store, alice)
        session = await new_session(store, phone, b"r0")
        await store.put_keys(phone.id, keys(one_time_ids=[1, 2]), T0)
        [sent] = await store.enqueue(
            [
                NewMessage(
                    sender_user_id=alice.id,
                    sender_device_id=phone.id,
                    sender_username="alice",
                    client_id="m1",
                    recipient_user_id=alice.id,
                    target_device_ids=[phone.id],
                    body="note to self",
                    sent_at=T0,
                    expires_at=T0 + DAY,
                )
            ],
            100,
        )
    async with backend.open() as store:
        assert await store.get_user_by_name("alice") == alice
        assert await store.list_devices(alice.id) == [phone]
        assert await store.get_session(session.id) == session
        assert (await store.prekey_status(phone.id)).one_time_prekeys == 2
        assert [m.message_id for m in await store.pending(phone.id, 0, 100)] == [sent.message_id]
        rotated = await store.rotate_refresh(b"r0", b"r1", T0 + 1, T0 + DAY)
        assert rotated.outcome is RefreshOutcome.ROTATED


async def test_opening_an_existing_database_again_is_harmless(backend: Backend) -> None:
    """Reopening (and so re-running migrations) keeps data and works normally."""
    for i in range(3):
        async with backend.open() as store:
            await new_user(store, f"user{i}")
    async with backend.open() as store:
        for i in range(3):
            assert await store.get_user_by_name(f"user{i}") is not None


# -- SQLite adapter specifics -------------------------------------------------


async def test_sqlite_open_sets_user_version_to_the_latest_migration(tmp_path: Path) -> None:
    """After opening, PRAGMA user_version is the number of migrations."""
    path = tmp_path / "relay.db"
    async with open_sqlite_store(str(path)):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


async def test_sqlite_migrate_is_idempotent(tmp_path: Path) -> None:
    """Migrating an up-to-date database changes neither its version nor its schema."""
    path = tmp_path / "relay.db"
    async with open_sqlite_store(str(path)):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        assert migrate(conn) == LATEST_VERSION
        assert migrate(conn) == LATEST_VERSION
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()


async def test_sqlite_refuses_a_database_from_a_newer_relay(tmp_path: Path) -> None:
    """A user_version above the latest known raises SchemaVersionError."""
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        async with open_sqlite_store(str(path)):
            pass


async def test_sqlite_uses_wal_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    """The connection is in WAL mode, fsyncs every commit and enforces foreign keys."""
    async with open_sqlite_store(str(tmp_path / "relay.db")) as store:
        conn = store._conn  # white-box: these settings are not observable otherwise
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        # 0: a locked database fails a statement at once, and the store retries
        # the transaction promptly until store.busy_timeout (test_sqlite_write_lock).
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0


async def test_sqlite_synchronous_normal_can_be_chosen(tmp_path: Path) -> None:
    """store.synchronous = normal sets SQLite's NORMAL level (crash-safe, not power-safe)."""
    async with open_sqlite_store(str(tmp_path / "relay.db"), "normal") as store:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


async def test_sqlite_refuses_an_unknown_synchronous_level(tmp_path: Path) -> None:
    """Anything but full or normal is an error, not a silent default."""
    with pytest.raises(StoreError):
        async with open_sqlite_store(str(tmp_path / "relay.db"), "off"):
            pass


async def test_sqlite_closed_store_refuses_calls(tmp_path: Path) -> None:
    """After aclose, calls raise StoreUnavailable."""
    async with open_sqlite_store(str(tmp_path / "relay.db")) as store:
        await store.aclose()
        with pytest.raises(StoreUnavailable):
            await store.ping()


async def test_sqlite_write_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    """A write that waits past busy_timeout for another's lock fails whole, as StoreUnavailable."""
    path = str(tmp_path / "relay.db")
    async with open_sqlite_store(path, busy_timeout=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await new_user(store)
            assert "locked" in caught.value.detail
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.get_user_by_name("alice") is None
        assert (await new_user(store)).username == "alice"


async def test_sqlite_closes_even_when_the_body_is_cancelled(tmp_path: Path) -> None:
    """A cancelled `async with` still closes the connection."""
    with trio.CancelScope() as scope:
        async with open_sqlite_store(str(tmp_path / "relay.db")) as store:
            scope.cancel()
            await trio.sleep_forever()
    assert store._conn is None


_ENQUEUE_THEN_DIE = """
import os, signal, sys
import trio
from relay.store import NewMessage, open_sqlite_store

async def main(path):
    async with open_sqlite_store(path) as store:
        user = await store.create_user("alice", b"h", 0.0)
        device = await store.create_device(user.id, "phone", 0.0)
        message = NewMessage(user.id, device.id, "u", "m1", user.id, [device.id], "kept", 0.0, 1e12)
        [accepted] = await store.enqueue([message], 10)
        print(device.id, accepted.message_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no atexit

trio.run(main, sys.argv[1])
"""


async def test_sqlite_accepted_message_survives_kill_9(tmp_path: Path) -> None:
    """Once enqueue returns, the message is on disk even if the process is killed."""
    path = str(tmp_path / "relay.db")
    died = await trio.run_process(
        [sys.executable, "-c", _ENQUEUE_THEN_DIE, path], capture_stdout=True, check=False
    )
    assert died.returncode == -signal.SIGKILL
    device_id, message_id = died.stdout.decode().split()
    async with open_sqlite_store(path) as store:
        assert [m.message_id for m in await store.pending(device_id, 0, 10)] == [message_id]


# -- account lifecycle ----------------------------------------------------------


async def test_list_users_by_name_with_devices_and_last_seen(store: Store) -> None:
    """Every account, by username, with its device count and latest last_seen_at."""
    bob = await new_user(store, "bob")
    alice = await new_user(store, "alice")
    await new_device(store, bob, now=T0 + 5)
    await new_device(store, bob, now=T0 + 9)
    users = await store.list_users()
    assert [(u.username, u.devices, u.last_seen_at) for u in users] == [
        ("alice", 0, None),
        ("bob", 2, T0 + 9),
    ]
    assert users[0].id == alice.id and users[1].id == bob.id


async def test_set_password_replaces_the_hash(store: Store) -> None:
    """The new hash is stored; an unknown user is False."""
    user = await new_user(store)
    assert await store.set_password(user.id, b"new-hash")
    stored = await store.get_user(user.id)
    assert stored is not None and stored.password_hash == b"new-hash"
    assert not await store.set_password("no-such-user", b"x")


async def test_revoke_user_sessions_keeps_the_one_asked(store: Store) -> None:
    """Every other active session is revoked and listed; the kept one stays active."""
    user = await new_user(store)
    phone, laptop = await new_device(store, user, "phone"), await new_device(store, user, "laptop")
    kept = await new_session(store, phone, b"r1")
    other = await new_session(store, laptop, b"r2")
    assert await store.revoke_user_sessions(user.id, T0 + 1, keep=kept.id) == [other.id]
    assert [s.id for s in await store.list_sessions(user.id, T0 + 1)] == [kept.id]
    assert [s.id for s in await store.revoked_since(T0)] == [other.id]
    assert await store.revoke_user_sessions(user.id, T0 + 2) == [kept.id]


async def test_delete_user_takes_everything_that_is_its(store: Store, cast: Cast) -> None:
    """Devices, sessions, keys and queued messages go; live sessions stay revoked for restarts."""
    session = await new_session(store, cast.bob_phone, b"r1")
    await store.put_keys(cast.bob_phone.id, keys(one_time_ids=[1]), T0)
    await store.enqueue([cast.message("m1")], 100)
    assert await store.delete_user(cast.bob.id, T0 + 1, T0 + DAY) == [session.id]
    assert await store.get_user(cast.bob.id) is None
    assert await store.get_device(cast.bob_phone.id) is None
    assert await store.get_session(session.id) is None
    assert await store.pending(cast.bob_phone.id, 0, 10) == []
    assert await store.fetch_bundles(cast.bob.id, None) == []
    assert [s.id for s in await store.revoked_since(T0)] == [session.id]
    assert await store.delete_user(cast.bob.id, T0 + 2, T0 + DAY) is None


async def test_delete_user_drops_messages_to_it_and_keeps_those_it_sent(
    store: Store, cast: Cast
) -> None:
    """Alice's message to Bob goes with Bob; Bob's message to Alice stays hers."""
    [to_bob] = await store.enqueue([cast.message("to-bob")], 100)
    from_bob = NewMessage(
        sender_user_id=cast.bob.id, sender_device_id=cast.bob_phone.id, sender_username="bob",
        client_id="from-bob", recipient_user_id=cast.alice.id,
        target_device_ids=[cast.alice_phone.id], body="hi alice", sent_at=T0, expires_at=T0 + DAY,
    )
    await store.enqueue([from_bob], 100)
    await store.delete_user(cast.bob.id, T0 + 1, T0 + DAY)
    assert [m.body for m in await store.pending(cast.alice_phone.id, 0, 10)] == ["hi alice"]
    [again] = await store.enqueue([cast.message("to-bob")], 100)
    assert isinstance(again, Enqueued) and not again.duplicate  # its record went with bob
    assert again.message_id != to_bob.message_id


async def test_a_deleted_username_is_quarantined_until_its_time(store: Store) -> None:
    """Nobody can register the name before retire_until; afterwards anyone can."""
    user = await new_user(store, "alice")
    await store.delete_user(user.id, T0, T0 + DAY)
    with pytest.raises(UsernameTaken):
        await store.create_user("alice", b"h", T0 + DAY - 1)
    assert (await store.create_user("alice", b"h", T0 + DAY)).username == "alice"


async def test_purge_forgets_expired_quarantines(store: Store) -> None:
    """After its time the quarantine record is swept."""
    user = await new_user(store, "alice")
    await store.delete_user(user.id, T0, T0 + 10)
    await store.purge_expired(T0 + 10)
    assert (await store.create_user("alice", b"h", T0 + 10)).username == "alice"


async def test_queue_depths_lists_the_longest_queues_first(store: Store, cast: Cast) -> None:
    """(device, username, count), longest first, at most limit of them."""
    await store.enqueue([cast.message(f"m{i}", targets=[cast.bob_phone]) for i in range(3)], 100)
    await store.enqueue([cast.message("all")], 100)
    phone, laptop = cast.bob_phone.id, cast.bob_laptop.id
    assert await store.queue_depths(10) == [(phone, "bob", 4), (laptop, "bob", 1)]
    assert await store.queue_depths(1) == [(cast.bob_phone.id, "bob", 4)]


# -- the group commit ---------------------------------------------------------------


def outgoing(
    cast: Cast, cid: str, to: str = "bob", device: str | None = None, sender: Device | None = None
) -> Outgoing:
    sender = sender or cast.alice_phone
    return Outgoing(
        sender_user_id=sender.user_id, sender_device_id=sender.id,
        sender_username="alice" if sender.user_id == cast.alice.id else "bob",
        client_id=cid, to_username=to, to_device=device, body=f"body of {cid}",
        sent_at=T0, expires_at=T0 + DAY,
    )


async def test_commit_routes_to_every_device_of_the_recipient(store: Store, cast: Cast) -> None:
    """A send to a user reaches all its devices; to one device, only that one."""
    to_all, to_one = await store.commit(
        [], [outgoing(cast, "m1"), outgoing(cast, "m2", device=cast.bob_laptop.id)],
        QueueLimits(100),
    )
    assert isinstance(to_all, Enqueued) and isinstance(to_one, Enqueued)
    assert to_all.target_device_ids == (cast.bob_phone.id, cast.bob_laptop.id)
    assert to_one.target_device_ids == (cast.bob_laptop.id,)


async def test_commit_sends_to_ones_own_other_devices_only(store: Store, cast: Cast) -> None:
    """To yourself: your other devices get it, the sending one never; alone, no_devices."""
    laptop = await new_device(store, cast.alice, "laptop")
    [synced] = await store.commit([], [outgoing(cast, "m1", to="alice")], QueueLimits(100))
    assert isinstance(synced, Enqueued) and synced.target_device_ids == (laptop.id,)
    await store.delete_device(cast.alice.id, laptop.id, T0)
    [alone] = await store.commit([], [outgoing(cast, "m2", to="alice")], QueueLimits(100))
    assert alone is Unroutable.NO_DEVICES


async def test_commit_refuses_what_cannot_be_routed(store: Store, cast: Cast) -> None:
    """No such user, or a device that is not the recipient's: refused, nothing stored."""
    results = await store.commit(
        [],
        [outgoing(cast, "m1", to="nobody"), outgoing(cast, "m2", device=cast.alice_phone.id)],
        QueueLimits(100),
    )
    assert results == [Unroutable.UNKNOWN_RECIPIENT, Unroutable.UNKNOWN_DEVICE]
    assert await store.pending(cast.bob_phone.id, 0, 10) == []


async def test_commit_applies_acks_and_sends_in_one_call(store: Store, cast: Cast) -> None:
    """Acks are applied before the sends of the same batch; results follow the sends' order."""
    [first] = await store.enqueue([cast.message("m0")], 100)
    assert isinstance(first, Enqueued)
    results = await store.commit(
        [(cast.bob_phone.id, [first.message_id])],
        [outgoing(cast, "m1"), outgoing(cast, "m2", to="nobody"), outgoing(cast, "m3")],
        QueueLimits(100),
    )
    assert [type(r).__name__ for r in results] == ["Enqueued", "Unroutable", "Enqueued"]
    assert await bodies(store, cast.bob_phone) == ["body of m1", "body of m3"]
    assert await bodies(store, cast.bob_laptop) == ["body of m0", "body of m1", "body of m3"]


async def test_commit_applies_the_queue_limits(store: Store, cast: Cast) -> None:
    """The same refusals as enqueue: a full queue, a sender's share."""
    sends = [outgoing(cast, f"m{i}", device=cast.bob_phone.id) for i in range(3)]
    results = await store.commit([], sends, QueueLimits(100, max_per_sender=2))
    assert results[2] == QueueFull(device_id=cast.bob_phone.id, sender_share=True)
