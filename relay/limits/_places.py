"""Places: at most *cap* holders per key at once (the embedded arithmetic)."""

from __future__ import annotations

from ._port import PlacePolicy


class Places:
    """Holders by key, never more than the policy's cap per key.

    Memory is one entry per place held: it is bounded by what holds them
    (each an open connection, itself capped), not by what outsiders ask.
    Synchronous and never blocking. Raises ValueError for a cap below 1.
    """

    __slots__ = ("_cap", "_held")

    def __init__(self, policy: PlacePolicy) -> None:
        if policy.cap < 1:
            raise ValueError(f"a place cap must be at least 1, got {policy.cap!r}")
        self._cap = policy.cap
        self._held: dict[str, set[str]] = {}

    def occupy(self, key: str, holder: str) -> bool:
        """Take a place of *key* for *holder* (already held: True); False if all are held."""
        holders = self._held.get(key)
        if holders is None:
            self._held[key] = {holder}
            return True
        if holder in holders:
            return True
        if len(holders) >= self._cap:
            return False
        holders.add(holder)
        return True

    def vacate(self, key: str, holder: str) -> None:
        """Give back *holder*'s place of *key*, if it holds one."""
        holders = self._held.get(key)
        if holders is not None:
            holders.discard(holder)
            if not holders:
                del self._held[key]
