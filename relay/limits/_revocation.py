"""Revoked sessions with an expiry: pure, no clock and no I/O."""

from __future__ import annotations


class RevocationList:
    """Session ids revoked until a time (seconds on the caller's monotonic clock).

    A session is revoked while ``now < until``. Entries are never needed
    after *until* (the session's tokens have expired by then), so expired
    entries are dropped lazily by :meth:`is_revoked` and all at once by
    :meth:`sweep`.
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        """The number of entries held, expired ones not yet swept included."""
        return len(self._until)

    def revoke(self, session_id: str, until: float) -> None:
        """Treat *session_id* as revoked until *until*.

        Revoking again can extend a revocation but never shorten it: a late,
        shorter revocation must not un-revoke a session.
        """
        current = self._until.get(session_id)
        if current is None or until > current:
            self._until[session_id] = until

    def is_revoked(self, session_id: str, now: float) -> bool:
        """True if *session_id* is revoked at *now*; forgets it if expired."""
        until = self._until.get(session_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[session_id]
        return False

    def sweep(self, now: float) -> int:
        """Forget every entry expired at *now*; return how many."""
        expired = [sid for sid, until in self._until.items() if now >= until]
        for sid in expired:
            del self._until[sid]
        return len(expired)

    def items(self) -> list[tuple[str, float]]:
        """Every (session id, until) held, expired ones not yet swept included."""
        return list(self._until.items())
