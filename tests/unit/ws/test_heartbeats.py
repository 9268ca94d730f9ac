"""Heartbeats: one task ticks every connection at its deadline, on virtual time."""

from __future__ import annotations

import trio
import trio.testing

from relay.ws._heartbeats import Heartbeats


class Clocked:
    """A connection whose deadline is set by the test; it records its ticks."""

    def __init__(self, deadline: float | None) -> None:
        self.next: float | None = deadline
        self.scheduled_at: float | None = None
        self.ticks: list[float] = []

    def deadline(self) -> float | None:
        return self.next

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.next = None  # once, unless the test moves it


async def test_each_connection_is_ticked_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three deadlines, one task: each is ticked at exactly its time."""
    beats = Heartbeats()
    conns = [Clocked(t) for t in (30.0, 10.0, 20.0)]
    async with trio.open_nursery() as nursery:
        await nursery.start(beats.run)
        for conn in conns:
            beats.schedule(conn)
        await trio.sleep(40)
        nursery.cancel_scope.cancel()
    assert [c.ticks for c in conns] == [[30.0], [10.0], [20.0]]


async def test_an_earlier_deadline_wakes_the_sleeping_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Scheduled while the task sleeps towards 100 s, a 5 s deadline is still on time."""
    beats = Heartbeats()
    late, early = Clocked(100.0), Clocked(5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(beats.run)
        beats.schedule(late)
        await trio.sleep(1)
        beats.schedule(early)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert early.ticks == [5.0] and late.ticks == []


async def test_a_moved_deadline_ticks_once_at_the_new_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rescheduled later, the old entry is skipped: one tick, at the new deadline."""
    beats = Heartbeats()
    conn = Clocked(10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(beats.run)
        beats.schedule(conn)
        conn.next = 15.0
        beats.schedule(conn)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert conn.ticks == [15.0]


async def test_a_forgotten_connection_is_never_ticked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After forget(), a connection's pending deadline does nothing."""
    beats = Heartbeats()
    conn = Clocked(10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(beats.run)
        beats.schedule(conn)
        beats.forget(conn)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert conn.ticks == []


def test_forgotten_entries_are_compacted_away() -> None:
    """Once most entries are stale the heap is rebuilt: gone connections are not kept."""
    beats = Heartbeats()
    conns = [Clocked(float(i)) for i in range(200)]
    for conn in conns:
        beats.schedule(conn)
    for conn in conns[:150]:
        beats.forget(conn)
    assert len(beats) < 200
