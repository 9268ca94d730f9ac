"""LocalBus: events go to the attached sink, or nowhere (safely) without one."""

from __future__ import annotations

from collections.abc import Sequence

from relay.bus import LocalBus


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def deliver(self, device_ids: Sequence[str], seq: int, frame: str, received_at: float) -> None:
        self.events.append(("deliver", tuple(device_ids), seq, frame))

    def revoke(self, session_id: str, reason: str) -> None:
        self.events.append(("revoke", session_id, reason))

    def notify(self, device_id: str, frame: str) -> None:
        self.events.append(("notify", device_id, frame))


async def test_events_reach_the_attached_sink() -> None:
    """Messages, revocations and notices are delivered to the sink as published."""
    bus, sink = LocalBus(), RecordingSink()
    bus.attach(sink)
    await bus.publish_message(["d1", "d2"], 7, "frame", 0.0)
    await bus.publish_revocation("s1", "logout")
    await bus.publish_notice("d1", "low")
    assert sink.events == [
        ("deliver", ("d1", "d2"), 7, "frame"),
        ("revoke", "s1", "logout"),
        ("notify", "d1", "low"),
    ]


async def test_without_a_sink_publishing_is_a_no_op() -> None:
    """Before attach and after detach nothing is delivered and nothing fails."""
    bus, sink = LocalBus(), RecordingSink()
    await bus.publish_message(["d1"], 1, "early", 0.0)
    bus.attach(sink)
    bus.attach(None)
    await bus.publish_revocation("s1", "logout")
    await bus.ping()
    assert sink.events == []
