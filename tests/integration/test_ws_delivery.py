"""Delivery: accepted only after storing, pushed online, replayed until acked."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Relay, RelayFactory, alice_and_bob, login, register
from tests.wsclient import WsClient, connect


async def send(ws: WsClient, cid: str, to: str = "bob", body: Any = "hi", **extra: Any) -> str:
    """Send and wait for accepted; return the server message id."""
    await ws.send(type="send", id=cid, to=to, body=body, **extra)
    accepted = await ws.expect("accepted")
    assert accepted["id"] == cid
    message_id: str = accepted["message_id"]
    return message_id


async def test_online_delivery_with_accepted_and_ack(relay: Relay, pair: Any) -> None:
    """Alice's send is accepted, Bob gets the message with sender and body, and acks it."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a, connect(relay, bob["access_token"]) as b:
        await a.expect("ready")
        await b.expect("ready")
        message_id = await send(a, "c1", body={"ct": "AAAA", "n": 1})
        message = await b.expect("message")
        assert message["id"] == message_id
        assert message["from"] == "alice" and message["from_device"] == alice["device_id"]
        assert message["body"] == {"ct": "AAAA", "n": 1}
        assert isinstance(message["sent_at"], float)
        await b.send(type="ack", id=message_id)
        # Acks are stored in order with sends: once this send is answered (bob has
        # no other device: no_devices), the ack before it is committed too.
        await b.send(type="send", id="sync", to="bob", body=1)
        assert (await b.expect("error"))["code"] == "no_devices"
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            await send(a, "marker")
        assert (await b.expect("message"))["body"] == "hi"  # not the acked one


async def test_accepted_means_stored(relay: Relay, pair: Any) -> None:
    """When accepted arrives, the message is already in Bob's queue in the store."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await send(a, "c1", body="stored?")
        queued = await relay.services.store.pending(bob["device_id"], 0, 10)
    assert [m.client_id for m in queued] == ["c1"]


async def test_offline_messages_replay_until_acked(relay: Relay, pair: Any) -> None:
    """Stored for an offline device, replayed on every connect until acked."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        ids = [await send(a, f"c{i}", body=i) for i in range(3)]
    for _ in range(2):  # not acked: comes back again
        async with connect(relay, bob["access_token"]) as b:
            await b.expect("ready")
            assert [(await b.expect("message"))["id"] for _ in range(3)] == ids
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        for _ in range(3):
            await b.send(type="ack", id=(await b.expect("message"))["id"])
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await send(a, "marker", body="marker")
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        assert (await b.expect("message"))["body"] == "marker"


async def test_batched_ack_form(relay: Relay, pair: Any) -> None:
    """{"type":"ack","ids":[...]} acks several messages at once."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        ids = [await send(a, f"c{i}") for i in range(3)]
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        for _ in ids:
            await b.expect("message")
        await b.send(type="ack", ids=ids)
        await b.send(type="ack", id="unknown-ids-are-ignored")
        # The pipeline keeps order: once a later send is accepted, the acks are stored.
        await send(b, "marker", to="alice")
    assert await relay.services.store.pending(bob["device_id"], 0, 10) == []


async def test_fan_out_to_every_device_and_own_other_devices(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """A send to a user reaches all their devices, and the sender's other devices."""
    alice, bob = pair
    bob_laptop = await login(client, "bob")
    alice_tablet = await login(client, "alice")
    async with (
        connect(relay, alice["access_token"]) as a,
        connect(relay, bob["access_token"]) as b1,
        connect(relay, bob_laptop["access_token"]) as b2,
    ):
        for ws in (a, b1, b2):
            await ws.expect("ready")
        message_id = await send(a, "c1")
        assert (await b1.expect("message"))["id"] == message_id
        assert (await b2.expect("message"))["id"] == message_id
        await send(a, "note", to="alice", body="to my other devices")
    async with connect(relay, alice_tablet["access_token"]) as tablet:
        await tablet.expect("ready")
        assert (await tablet.expect("message"))["body"] == "to my other devices"
    queued = await relay.services.store.pending(alice["device_id"], 0, 10)
    assert queued == []  # the sending device gets no copy of its own message


async def test_device_targeted_send_reaches_only_that_device(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """With "device", only the named device gets the message."""
    alice, bob = pair
    bob_laptop = await login(client, "bob")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await send(a, "c1", device=bob_laptop["device_id"])
    store = relay.services.store
    assert [m.client_id for m in await store.pending(bob_laptop["device_id"], 0, 10)] == ["c1"]
    assert await store.pending(bob["device_id"], 0, 10) == []


async def test_resending_the_same_id_never_duplicates(relay: Relay, pair: Any) -> None:
    """The same client id twice: both accepted with one message id, stored once."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        first = await send(a, "same", body="once")
        second = await send(a, "same", body="once")
    assert first == second
    assert len(await relay.services.store.pending(bob["device_id"], 0, 10)) == 1


async def test_fifo_order_over_hundreds_of_messages(relay_with: RelayFactory) -> None:
    """500 messages sent back to back arrive in the order sent, live and on replay."""
    relay, http = await relay_with(
        ws__send_burst=1000,
        ws__send_rate_per_second=1000.0,
        ws__send_burst_per_user=1000,
        ws__send_rate_per_user_per_second=1000.0,
    )
    alice, bob = await alice_and_bob(http)
    count = 500
    async with connect(relay, alice["access_token"]) as a, connect(relay, bob["access_token"]) as b:
        await a.expect("ready")
        await b.expect("ready")
        for i in range(count):
            await a.send(type="send", id=f"c{i}", to="bob", body=i)
        live = [(await b.expect("message"))["body"] for _ in range(count)]
        accepted = [(await a.expect("accepted"))["id"] for _ in range(count)]
    assert live == list(range(count))
    assert accepted == [f"c{i}" for i in range(count)]
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        replayed = [(await b.expect("message"))["body"] for _ in range(count)]
    assert replayed == list(range(count))


async def test_unknown_recipient_is_an_error(relay: Relay, pair: Any) -> None:
    """Sending to a user that does not exist answers error unknown_recipient with ref."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="nobody", body="hi")
        error = await a.expect("error")
    assert (error["code"], error["ref"]) == ("unknown_recipient", "c1")


async def test_user_without_devices_is_an_error(relay: Relay, client: httpx.AsyncClient) -> None:
    """A user who never logged in has no device: error no_devices, nothing stored."""
    await register(client, "alice")
    await register(client, "carol")
    alice = await login(client, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="carol", body="x")
        assert (await a.expect("error"))["code"] == "no_devices"


async def test_unknown_device_is_an_error(relay: Relay, pair: Any) -> None:
    """A device id not of the recipient answers error unknown_device."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="bob", device=alice["device_id"], body="x")
        assert (await a.expect("error"))["code"] == "unknown_device"


async def test_a_full_queue_refuses_and_keeps_what_it_accepted(relay_with: RelayFactory) -> None:
    """At queue.max_per_device the next send gets error queue_full; the queued ones stay."""
    relay, http = await relay_with(queue__max_per_device=3)
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for i in range(3):
            await send(a, f"c{i}", body=i)
        await a.send(type="send", id="c3", to="bob", body=3)
        error = await a.expect("error")
    assert (error["code"], error["ref"]) == ("queue_full", "c3")
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        assert [(await b.expect("message"))["body"] for _ in range(3)] == [0, 1, 2]


async def test_another_user_cannot_push_out_a_friends_message(relay_with: RelayFactory) -> None:
    """A flood from one account with many devices never evicts a friend's accepted message."""
    relay, http = await relay_with(
        queue__max_per_device=20,
        queue__max_per_sender=5,
        ws__send_burst=1_000,
        ws__send_rate_per_second=1_000.0,
    )
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await send(a, "friend", body="from a friend")
    await register(http, "mallory")
    refused = 0
    for device in range(4):
        grant = await login(http, "mallory", device_name=f"d{device}")
        async with connect(relay, grant["access_token"]) as m:
            await m.expect("ready")
            for i in range(10):
                await m.send(type="send", id=f"m{i}", to="bob", body="spam")
                answer = await m.recv()
                refused += answer["type"] == "error" and answer["code"] == "queue_full"
    assert refused == 35  # 5 of mallory's 40 fit her share of bob's queue
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        assert (await b.expect("message"))["body"] == "from a friend"


async def test_send_rate_limit_per_device(relay_with: RelayFactory) -> None:
    """Past the per-device burst, sends get error rate_limited; the connection stays."""
    relay, http = await relay_with(ws__send_burst=3, ws__send_rate_per_second=0.01)
    await register(http, "alice")
    await register(http, "bob")
    alice = await login(http, "alice")
    await login(http, "bob")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for i in range(3):
            await send(a, f"c{i}")
        await a.send(type="send", id="c3", to="bob", body="x")
        error = await a.expect("error")
        assert (error["code"], error["ref"]) == ("rate_limited", "c3")
        await a.send(type="ack", id="still-open")


async def test_expired_messages_are_purged(relay: Relay, pair: Any, wall: Any) -> None:
    """Past queue.ttl a queued message is dropped by the sweep."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await send(a, "old")
    wall.advance(2_592_000)
    assert await relay.services.store.purge_expired(wall()) == 1
    assert await relay.services.store.pending(bob["device_id"], 0, 10) == []


async def test_a_resync_sends_what_the_bus_dropped(relay: Relay, pair: Any) -> None:
    """A message stored without its push (a shared bus lost it) arrives on Resync, once."""
    from relay.bus import PrekeysLow, Resync
    from relay.store import Outgoing, QueueLimits

    alice, bob = pair
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        stored = Outgoing(
            sender_user_id=alice["user_id"], sender_device_id=alice["device_id"],
            sender_username="alice", client_id="lost-push", to_username="bob", to_device=None,
            body='"pushed by nobody"', sent_at=1.0, expires_at=2e9,
        )
        await relay.services.store.commit([], [stored], QueueLimits(100))  # no publish
        await relay.services.bus.publish(Resync())
        message = await b.expect("message")
        assert message["body"] == "pushed by nobody"
        await relay.services.bus.publish(Resync())  # again: nothing new to send ...
        await relay.services.bus.publish(PrekeysLow(bob["device_id"], 3))
        assert (await b.recv())["type"] == "prekeys_low"  # ... so no duplicate came first
