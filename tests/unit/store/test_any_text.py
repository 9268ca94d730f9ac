"""Strings a client chooses are kept and matched exactly, on every adapter, a NUL included.

PostgreSQL text cannot hold a NUL character (SQLite's can), and a client may
put one in a send frame's id, a device name, or an id it looks up. Stored
values must come back as given, lookups must find nothing rather than fail,
and one such send must never spoil the other sends of its batch.
"""

from __future__ import annotations

import pytest

from relay.store import Enqueued, Outgoing, QueueLimits, Store, Unroutable

from .test_contract import T0, Cast, new_device, new_user
from .test_contract import cast as cast  # the fixture

LIMITS = QueueLimits(max_per_device=100)
ODD = "a\x00b\\c\u00e9\U0001f600"


def send(cast: Cast, client_id: str, to: str = "bob", to_device: str | None = None) -> Outgoing:
    return Outgoing(
        cast.alice.id, cast.alice_phone.id, "alice", client_id, to, to_device,
        f"body {client_id}", T0, T0 + 3600,
    )


async def test_a_client_id_with_a_nul_is_stored_and_answered_as_given(
    store: Store, cast: Cast
) -> None:
    """The id comes back in pending, and sending it again is a duplicate."""
    [first] = await store.commit([], [send(cast, ODD)], LIMITS)
    [again] = await store.commit([], [send(cast, ODD)], LIMITS)
    assert isinstance(first, Enqueued) and isinstance(again, Enqueued)
    assert again.duplicate and again.message_id == first.message_id
    [queued] = await store.pending(cast.bob_phone.id, 0, 10)
    assert queued.client_id == ODD


async def test_odd_strings_in_a_batch_spoil_nothing_else(store: Store, cast: Cast) -> None:
    """A NUL in a recipient, a device or an acked id refuses that item only; the rest is stored."""
    [old] = await store.commit([], [send(cast, "old")], LIMITS)
    assert isinstance(old, Enqueued)
    results = await store.commit(
        [(cast.bob_phone.id, ["x\x00y", old.message_id])],
        [
            send(cast, "c1"),
            send(cast, "c2", to="bo\x00b"),
            send(cast, "c3", to_device="dev\x00ice"),
            send(cast, "c4\x00"),
        ],
        LIMITS,
    )
    assert isinstance(results[0], Enqueued) and isinstance(results[3], Enqueued)
    assert results[1:3] == [Unroutable.UNKNOWN_RECIPIENT, Unroutable.UNKNOWN_DEVICE]
    assert [m.client_id for m in await store.pending(cast.bob_phone.id, 0, 10)] == ["c1", "c4\x00"]


@pytest.mark.parametrize("name", ["phone \x00", "ünïcødé 📱", "back\\slash"])
async def test_a_device_name_comes_back_as_given(store: Store, name: str) -> None:
    """Any device name, NUL included, is kept exactly."""
    user = await new_user(store)
    device = await new_device(store, user, name)
    assert (await store.get_device(device.id)) == device
    assert [d.name for d in await store.list_devices(user.id)] == [name]


async def test_lookups_by_a_string_with_a_nul_find_nothing(store: Store, cast: Cast) -> None:
    """Usernames, devices and sessions named with a NUL do not exist; nothing fails."""
    assert await store.get_user_by_name("alice\x00") is None
    assert await store.get_user("x\x00") is None
    assert await store.get_device(cast.bob_phone.id + "\x00") is None
    assert await store.get_session("s\x00") is None
    assert await store.revoke_session("s\x00", T0) is None
    assert await store.delete_device(cast.bob.id, "d\x00", T0) is None
    assert await store.fetch_bundles(cast.bob.id, "d\x00") == []
    assert await store.resolve_users(["bob", "bo\x00b"]) == {
        "bob": (cast.bob.id, [cast.bob_phone.id, cast.bob_laptop.id])
    }
    assert await store.ack(cast.bob_phone.id, ["m\x00"]) == 0
