"""One timer task for every connection of a server: pings, pong deadlines, expiry.

A sleeping heartbeat task per connection costs a few KiB of memory each;
this keeps one heap of deadlines instead. Connections schedule themselves
(:meth:`Heartbeats.schedule`) whenever their next deadline may have moved;
the task sleeps until the earliest, then calls each due connection's
``tick(now)``, which never blocks (a ping is handed to the connection's own
writer). Stale heap entries — a deadline that moved, a connection gone —
are skipped when they come up, so scheduling is O(log n) and nothing is
ever searched.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio


class Timed(Protocol):
    """What the heartbeat task drives."""

    scheduled_at: float | None  # the deadline of its live heap entry (set by Heartbeats)

    def deadline(self) -> float | None:
        """When to tick next; None once the connection is closing."""

    def tick(self, now: float) -> None:
        """Act on the timers due at *now*; must not block."""


class Heartbeats:
    """Drives :class:`Timed` connections from one task; see the module doc.

    Deadlines are on Trio's clock (the one it sleeps on; a MockClock in tests).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()  # ties: first scheduled, first ticked
        self._wakeup = trio.Event()
        self._stale = 0

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests and metrics)."""
        return len(self._heap)

    def schedule(self, conn: Timed) -> None:
        """(Re)schedule *conn* at its current deadline; a no-op if it is already there."""
        deadline = conn.deadline()
        if deadline is None or deadline == conn.scheduled_at:
            return
        conn.scheduled_at = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), conn))
        if self._heap[0][2] is conn:
            self._wakeup.set()  # an earlier deadline than the one slept on

    def forget(self, conn: Timed) -> None:
        """*conn* is gone: drop its entry (lazily; the heap is compacted when half stale)."""
        if conn.scheduled_at is None:
            return
        conn.scheduled_at = None
        self._stale += 1
        if self._stale > 64 and 2 * self._stale > len(self._heap):
            # Only stale entries reference connections that are gone, so
            # this keeps their memory from outliving them by a whole interval.
            self._heap = [e for e in self._heap if e[2].scheduled_at == e[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick due connections until cancelled. Supports ``nursery.start()``."""
        task_status.started()
        while True:
            self._wakeup = trio.Event()
            with trio.move_on_at(self._heap[0][0] if self._heap else math.inf):
                await self._wakeup.wait()
            self._tick_due(trio.current_time())

    def _tick_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, conn = heapq.heappop(heap)
            if conn.scheduled_at != deadline:
                self._stale = max(0, self._stale - 1)
                continue  # superseded by a later entry, or the connection is gone
            conn.scheduled_at = None
            conn.tick(now)
            self.schedule(conn)
