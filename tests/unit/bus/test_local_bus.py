"""LocalBus: events go to the attached sink, or nowhere (safely) without one."""

from __future__ import annotations

import msgspec

from relay.bus import Event, LocalBus, MessageQueued, PrekeysLow, SessionRevoked

MESSAGE = MessageQueued(
    device_ids=("d1", "d2"),
    seq=7,
    message_id="m1",
    sender="alice",
    sender_device="a1",
    body=msgspec.Raw(b'"hi"'),
    sent_at=1.0,
)


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)


async def test_events_reach_the_attached_sink() -> None:
    """Messages, revocations and notices are delivered to the sink as published."""
    bus, sink = LocalBus(), RecordingSink()
    bus.attach(sink)
    events = [MESSAGE, SessionRevoked("s1", "logout"), PrekeysLow("d1", 3)]
    for event in events:
        await bus.publish(event)
    assert sink.events == events


async def test_without_a_sink_publishing_is_a_no_op() -> None:
    """Before attach and after detach nothing is delivered and nothing fails."""
    bus, sink = LocalBus(), RecordingSink()
    await bus.publish(MESSAGE)
    bus.attach(sink)
    bus.attach(None)
    await bus.publish(SessionRevoked("s1", "logout"))
    await bus.ping()
    assert sink.events == []


def test_events_round_trip_as_json_for_a_shared_bus() -> None:
    """Every event encodes to JSON and decodes to an equal event (its tag says which)."""
    decoder = msgspec.json.Decoder(Event)
    for event in (MESSAGE, SessionRevoked("s1", "logout"), PrekeysLow("d1", 3)):
        assert decoder.decode(msgspec.json.encode(event)) == event
