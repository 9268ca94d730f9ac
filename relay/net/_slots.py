"""Connection slots: how many sockets each source, and everyone, may hold. Pure.

A slot is taken when a connection is accepted and given back when its
handler ends, whatever the path. Memory is bounded by construction: only
sources holding at least one slot have an entry, and the total is capped.
"""

from __future__ import annotations

import enum


class Full(enum.Enum):
    """Why a slot was refused."""

    SOURCE = "source"  # this source holds its maximum already
    TOTAL = "total"  # everyone together holds the maximum


class ConnectionSlots:
    """At most *per_source* slots per source and *total* in all (None: no cap).

    :meth:`take` and :meth:`give_back` are synchronous and never block; the
    caller pairs them (one ``give_back`` per successful ``take``).
    """

    __slots__ = ("_held", "_per_source", "_total", "_used")

    def __init__(self, *, total: int | None, per_source: int | None = None) -> None:
        for name, value in (("total", total), ("per_source", per_source)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {value!r}")
        self._total = total
        self._per_source = per_source
        self._held: dict[str, int] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Slots held now, by all sources."""
        return self._used

    def full(self) -> bool:
        """True if no source can take a slot now (the total is reached)."""
        return self._total is not None and self._used >= self._total

    def held_by(self, source: str) -> int:
        return self._held.get(source, 0)

    def top(self, n: int) -> list[tuple[str, int]]:
        """The *n* sources holding the most slots, most first."""
        return sorted(self._held.items(), key=lambda item: (-item[1], item[0]))[:n]

    def sources(self) -> int:
        """How many sources hold at least one slot."""
        return len(self._held)

    def take(self, source: str) -> Full | None:
        """Take a slot for *source*; None if taken, else why it was refused."""
        if self._total is not None and self._used >= self._total:
            return Full.TOTAL
        held = self._held.get(source, 0)
        if self._per_source is not None and held >= self._per_source:
            return Full.SOURCE
        self._held[source] = held + 1
        self._used += 1
        return None

    def give_back(self, source: str) -> None:
        """Return one of *source*'s slots. Raises ValueError if it holds none."""
        held = self._held.get(source, 0)
        if held <= 0:
            raise ValueError(f"{source!r} holds no slot")
        if held == 1:
            del self._held[source]
        else:
            self._held[source] = held - 1
        self._used -= 1
