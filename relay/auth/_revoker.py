"""Revoking sessions: their access tokens refused from now on, their sockets closed."""

from __future__ import annotations

from collections.abc import Iterable

from ..bus import Bus, SessionRevoked
from ..limits import Limits
from ..obs import Logger, Metrics


class Revoker:
    """Puts sessions on the revocation list and tells every process (4003).

    The store records revocations itself; this is what the running relays
    must know at once: an access token stays valid until it expires
    unless its session is on the list (for one access-token lifetime).
    """

    def __init__(
        self, limits: Limits, bus: Bus, metrics: Metrics, log: Logger, access_ttl: float
    ) -> None:
        self._limits = limits
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._access_ttl = access_ttl

    async def revoke(self, session_ids: Iterable[str], reason: str) -> None:
        for session_id in session_ids:
            await self._limits.revoke(session_id, self._access_ttl)
            self._metrics.sessions_revoked.labels(reason).inc()
            self._log.warning("session.revoked", session_id=session_id, reason=reason)
            # Whichever process holds the session's sockets closes them (4003).
            await self._bus.publish(SessionRevoked(session_id, reason))
