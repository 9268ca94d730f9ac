"""The shared bus's pure parts: who gets which devices, local presence, the wire."""

from __future__ import annotations

import msgspec

from relay.bus import MessageQueued, PrekeysLow, Resync, SessionRevoked
from relay.bus._routing import (
    DECODER,
    ENCODER,
    BusKeys,
    Envelope,
    Presence,
    envelopes,
    narrowed,
    route,
)

MESSAGE = MessageQueued(
    device_ids=("d1", "d2", "d3"),
    seq=7,
    message_id="m1",
    sender="alice",
    sender_device="a1",
    body=msgspec.Raw(b'{"ct":"AAAA"}'),
    sent_at=1.0,
    received_at=55.5,
)


def test_each_process_gets_only_the_devices_it_holds() -> None:
    """Devices are grouped by their owning process, in order."""
    owners = {"d1": "p2", "d2": "p3", "d3": "p2"}
    assert route(["d1", "d2", "d3"], owners, me="p1") == {"p2": ("d1", "d3"), "p3": ("d2",)}


def test_devices_held_by_nobody_or_by_this_process_are_not_published() -> None:
    """No route (offline) or a route to this very process: nothing goes over Redis."""
    owners = {"d1": None, "d2": "p1"}
    assert route(["d1", "d2", "d9"], owners, me="p1") == {}


def test_a_remote_share_names_only_its_devices_and_no_local_time() -> None:
    """The event another process gets lists its devices only; received_at is 0.0 there."""
    share = narrowed(MESSAGE, ("d2",))
    assert isinstance(share, MessageQueued)
    assert share.device_ids == ("d2",) and share.received_at == 0.0
    assert (share.message_id, share.seq, share.body) == ("m1", 7, MESSAGE.body)


def test_events_without_device_lists_travel_unchanged() -> None:
    """Notices and revocations are not narrowed."""
    for event in (PrekeysLow("d1", 3), SessionRevoked("s1", "logout")):
        assert narrowed(event, ("d1",)) is event


EVERY_KIND = (MESSAGE, SessionRevoked("s1", "logout"), PrekeysLow("d1", 3), Resync())


def test_every_event_crosses_as_json_in_an_envelope() -> None:
    """The envelope names the sending process; the tagged events decode to equal ones."""
    decoded = DECODER.decode(ENCODER.encode(Envelope("p1", EVERY_KIND)))
    assert decoded == Envelope("p1", EVERY_KIND)


def test_a_batch_for_one_process_is_one_envelope() -> None:
    """Events published together travel together, in order, as msgspec would write them."""
    [payload] = envelopes("p1", EVERY_KIND)
    assert payload == ENCODER.encode(Envelope("p1", EVERY_KIND))
    assert DECODER.decode(payload).events == EVERY_KIND


def test_envelopes_are_cut_by_size_and_keep_the_order() -> None:
    """Past *max_bytes* a new envelope starts; an event larger than that goes alone."""
    big = msgspec.structs.replace(MESSAGE, body=msgspec.Raw(b'"' + b"x" * 500 + b'"'))
    events = [MESSAGE, MESSAGE, big, MESSAGE]
    payloads = envelopes("p1", events, max_bytes=400)
    decoded = [DECODER.decode(p).events for p in payloads]
    assert [e for part in decoded for e in part] == events
    assert [len(part) for part in decoded] == [2, 1, 1]


def test_names_live_under_the_prefix() -> None:
    """Channels and keys all start with the configured prefix."""
    keys = BusKeys("chat:")
    names = [keys.process("p1"), keys.everyone, keys.presence("d1"), keys.revocations]
    assert all(name.startswith("chat:bus:") for name in names)
    assert len(set(names)) == 4


def test_a_device_stays_routed_here_until_its_last_connection_goes() -> None:
    """Two connections of one device: withdrawing one keeps the route, the second removes it."""
    presence = Presence()
    presence.add("d1")
    presence.add("d1")
    assert presence.remove("d1") is False
    assert "d1" in presence
    assert presence.remove("d1") is True
    assert "d1" not in presence
    assert presence.take_withdrawn() == ["d1"]
    assert presence.take_withdrawn() == []


def test_a_device_announced_again_is_not_withdrawn() -> None:
    """A reconnect before the withdrawal batch leaves goes keeps the route."""
    presence = Presence()
    presence.add("d1")
    presence.remove("d1")
    presence.add("d1")
    assert presence.take_withdrawn() == []
    assert presence.devices() == ["d1"]


def test_withdrawing_a_device_never_announced_changes_nothing() -> None:
    """An unmatched withdraw is ignored (nothing to remove)."""
    presence = Presence()
    assert presence.remove("d1") is False
    assert len(presence) == 0 and presence.take_withdrawn() == []
