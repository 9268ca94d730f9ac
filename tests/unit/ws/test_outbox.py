"""Outbox: a bounded queue of typed items that never blocks its producers."""

from __future__ import annotations

import trio
import trio.testing

from relay.ws._outbox import Control, Delivery, Outbox


def test_items_come_out_in_order_in_batches() -> None:
    """take(limit) hands out the oldest items first, at most limit at a time."""
    box = Outbox(capacity=10, window=5, on_item=lambda: None)
    for i in range(5):
        box.put(Delivery(i, f"m{i}", 0.0))
    assert [d.seq for d in box.take(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert [d.seq for d in box.take(3)] == [3, 4]  # type: ignore[union-attr]
    assert len(box) == 0


def test_a_full_outbox_refuses_and_says_so() -> None:
    """Past capacity, put returns False and the outbox is marked overflowed."""
    box = Outbox(capacity=2, window=1, on_item=lambda: None)
    assert box.put(Control("a")) and box.put(Control("b"))
    assert not box.put(Control("c"))
    assert box.overflowed and len(box) == 2


def test_every_item_wakes_the_owner() -> None:
    """on_item is called for each item put in (the owner starts its writer)."""
    calls: list[int] = []
    box = Outbox(capacity=4, window=1, on_item=lambda: calls.append(len(calls)))
    box.put(Control("a"))
    box.answer("b")
    assert len(calls) == 2


async def test_the_send_window_is_freed_by_answers() -> None:
    """window sends may be in flight; the next waits until one is answered."""
    box = Outbox(capacity=10, window=2, on_item=lambda: None)
    await box.reserve()
    await box.reserve()
    reserved = trio.Event()

    async def third() -> None:
        await box.reserve()
        reserved.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not reserved.is_set()
        box.answer('{"type":"accepted"}')
    assert reserved.is_set()
