"""Recent refusals, remembered locally: a shared adapter's synchronous ``blocked_for``.

``blocked_for`` is asked for every accepted socket, before any parsing, so it
cannot wait for Redis. Each ``take`` this process makes learns how long the
bucket stays empty (the script says so, granted or not); this cache keeps
that until the moment passes. Pure: the caller passes *now* (its monotonic
clock), memory is bounded.
"""

from __future__ import annotations

from collections import OrderedDict


class RecentRefusals:
    """(limit, key) -> the local time until which a take of 1 would be refused.

    At most *max_keys* entries: the least recently noted goes first (it is
    the one closest to lapsing anyway, or a source that has gone quiet).
    """

    __slots__ = ("_max_keys", "_until")

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._max_keys = max_keys
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def note(self, limit: str, key: str, now: float, wait: float | None) -> None:
        """A take at *now* left (*limit*, *key*) empty for *wait* seconds (None: not empty)."""
        entry = (limit, key)
        if wait is None or wait <= 0:
            self._until.pop(entry, None)
            return
        self._until[entry] = now + wait
        self._until.move_to_end(entry)
        if len(self._until) > self._max_keys:
            self._until.popitem(last=False)

    def blocked_for(self, limit: str, key: str, now: float) -> float | None:
        """Seconds until a take of 1 would succeed, as far as this process knows; None if now."""
        entry = (limit, key)
        until = self._until.get(entry)
        if until is None:
            return None
        if now >= until:
            del self._until[entry]
            return None
        return until - now
