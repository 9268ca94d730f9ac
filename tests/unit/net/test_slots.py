"""ConnectionSlots: per-source and total caps on held connections."""

from __future__ import annotations

import pytest

from relay.net import ConnectionSlots, Full


def test_a_source_gets_its_slots_then_is_refused() -> None:
    """per_source slots are granted to one source, the next is refused as SOURCE."""
    slots = ConnectionSlots(total=None, per_source=2)
    assert slots.take("a") is None and slots.take("a") is None
    assert slots.take("a") is Full.SOURCE
    assert slots.take("b") is None


def test_the_total_caps_everyone_together() -> None:
    """Past the total, every source is refused as TOTAL, even one holding nothing."""
    slots = ConnectionSlots(total=2, per_source=5)
    assert slots.take("a") is None and slots.take("b") is None
    assert slots.take("c") is Full.TOTAL
    assert slots.full()


def test_a_refused_take_holds_nothing() -> None:
    """Refusals change no count."""
    slots = ConnectionSlots(total=1, per_source=1)
    slots.take("a")
    slots.take("a")
    slots.take("b")
    assert slots.used == 1 and slots.held_by("a") == 1 and slots.held_by("b") == 0


def test_giving_back_frees_the_slot_and_forgets_an_empty_source() -> None:
    """A source with no slot left has no entry (memory is bounded by the slots held)."""
    slots = ConnectionSlots(total=None, per_source=1)
    slots.take("a")
    slots.give_back("a")
    assert slots.sources() == 0 and slots.used == 0
    assert slots.take("a") is None


def test_giving_back_a_slot_never_taken_raises() -> None:
    """An unpaired give_back is a bug, not a silent miscount."""
    with pytest.raises(ValueError, match="holds no slot"):
        ConnectionSlots(total=None).give_back("a")


@pytest.mark.parametrize("bad", [0, -1])
def test_caps_below_one_are_refused(bad: int) -> None:
    """A cap of 0 would refuse everything: a configuration error, caught at construction."""
    with pytest.raises(ValueError):
        ConnectionSlots(total=bad)
