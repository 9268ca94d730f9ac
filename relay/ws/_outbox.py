"""A connection's outbound side: typed items in a bounded queue, and its send window.

Producers — the registry (messages, notices), the delivery pipeline
(answers to sends), the connection's own reader (errors) — put items in and
never block: an outbox that is full is *overflowed*, and its connection is
closed with 1013 (its messages stay stored). The connection's single writer
takes everything waiting at once and writes it in one socket write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import trio


class Control(NamedTuple):
    """A frame sent as it is: an answer, an error, a notice."""

    frame: str


class Delivery(NamedTuple):
    """A stored message pushed live; *seq* lets a replay skip what it already sent."""

    seq: int
    frame: str
    received_at: float  # monotonic, when the send frame arrived here (0.0: elsewhere)


class Ping(NamedTuple):
    """A ping, already framed: the writer sends the bytes."""

    data: bytes


Outbound = Control | Delivery | Ping


class Outbox:
    """Bounded FIFO of :data:`Outbound` items for one connection; see the module doc.

    *on_item* is called (synchronously) after every item put in, so that the
    owner can make sure a writer is running. ``window`` slots are sends in
    flight: the reader takes one per send (:meth:`reserve`), the pipeline's
    answer (:meth:`answer`) gives it back.
    """

    __slots__ = ("_capacity", "_items", "_on_item", "_window", "overflowed")

    def __init__(self, capacity: int, window: int, on_item: Callable[[], None]) -> None:
        self._items: deque[Outbound] = deque()
        self._capacity = capacity
        self._on_item = on_item
        self._window = trio.Semaphore(max(1, window))
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outbound) -> bool:
        """Queue *item*; False (and overflowed) if the outbox is full. Never blocks."""
        if len(self._items) >= self._capacity:
            self.overflowed = True
            return False
        self._items.append(item)
        self._on_item()
        return True

    def answer(self, frame: str) -> bool:
        """Queue the one answer to a send (``accepted`` or an error) and free its slot."""
        self._window.release()
        return self.put(Control(frame))

    async def reserve(self) -> None:
        """Wait for a slot for one more send in flight."""
        await self._window.acquire()

    def take(self, limit: int) -> list[Outbound]:
        """Up to *limit* items, oldest first, removed from the outbox."""
        items = self._items
        if len(items) <= limit:
            taken = list(items)
            items.clear()
            return taken
        return [items.popleft() for _ in range(limit)]
