"""Known sources: which IPs a user has logged in from lately. Pure, bounded."""

from __future__ import annotations

from collections import OrderedDict


class KnownSources:
    """Per key, up to *per_key* members, each remembered until an expiry time.

    Times are seconds on the caller's clock, passed in. Memory is bounded:
    at most *max_keys* keys (the least recently remembered goes first) and
    *per_key* members each (the oldest goes first).
    """

    __slots__ = ("_keys", "_max_keys", "_per_key")

    def __init__(self, *, per_key: int = 8, max_keys: int = 100_000) -> None:
        if per_key < 1 or max_keys < 1:
            raise ValueError("per_key and max_keys must be at least 1")
        self._per_key = per_key
        self._max_keys = max_keys
        self._keys: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def remember(self, key: str, member: str, until: float) -> None:
        """Know *member* under *key* until *until* (a later call can extend it)."""
        members = self._keys.get(key)
        if members is None:
            if len(self._keys) >= self._max_keys:
                self._keys.popitem(last=False)
            members = self._keys[key] = OrderedDict()
        else:
            self._keys.move_to_end(key)
        members[member] = max(until, members.get(member, until))
        members.move_to_end(member)
        while len(members) > self._per_key:
            members.popitem(last=False)

    def knows(self, key: str, member: str, now: float) -> bool:
        """True if *member* is remembered under *key* at *now*."""
        members = self._keys.get(key)
        if members is None:
            return False
        until = members.get(member)
        if until is None:
            return False
        if now >= until:
            del members[member]
            if not members:
                del self._keys[key]
            return False
        return True

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)
