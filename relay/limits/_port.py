"""The Limits port: rate limits, lockouts and the revocation list.

The embedded adapter keeps everything in memory (one process); a Redis
adapter (later) implements the same calls with atomic scripts so that N
processes enforce one limit. Times inside an adapter come from its own
injected clock; callers pass durations, never timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """A token bucket: *rate* tokens per second sustained, at most *burst* saved."""

    rate: float
    burst: float

    @classmethod
    def per_minute(cls, n: float, burst: float | None = None) -> RatePolicy:
        """N per minute sustained (refill n/60 per second), burst N unless given."""
        return cls(rate=n / 60.0, burst=float(n if burst is None else burst))

    @classmethod
    def per_hour(cls, n: float) -> RatePolicy:
        """N per hour sustained, at most N at once."""
        return cls(rate=n / 3600.0, burst=float(n))


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """*threshold* failures within *window* seconds lock the key for *duration*."""

    threshold: int
    window: float
    duration: float


@dataclass(frozen=True, slots=True)
class PlacePolicy:
    """At most *cap* places held at once per key (e.g. one per open connection)."""

    cap: int


@dataclass(frozen=True, slots=True)
class Refusing:
    """A limit that would refuse its key now, and for how long."""

    limit: str
    key: str
    seconds: float


def retry_after_header(wait: float) -> str:
    """``Retry-After`` for a refusal that clears in *wait* seconds.

    Whole seconds, rounded up (a client that waits that long succeeds), and
    at least 1. A nanosecond of float noise above a whole second is not
    rounded up to the next one.
    """
    return str(max(1, math.ceil(wait - 1e-9)))


class Limits(Protocol):
    """Rate limits, failure lockouts, known sources and the revocation list.

    Every limit and lockout is named (see :mod:`relay.limits._policies`) and
    keyed by the caller (an IP, a username, a device id...). An adapter
    bounds the memory any key can cost; outsiders choose keys.
    """

    async def take(self, limit: str, key: str, cost: float = 1.0) -> float | None:
        """Take *cost* tokens from bucket (*limit*, *key*).

        Returns None if allowed, else the seconds until it would be (for
        ``Retry-After``). A refused take consumes nothing.
        Raises KeyError for a *limit* with no policy.
        """

    def blocked_for(self, limit: str, key: str) -> float | None:
        """Seconds until a take from (*limit*, *key*) would succeed; None if now.

        Read-only and synchronous: an adapter answers from local state (a
        shared adapter may answer from a local cache of recent refusals), so
        it can be asked at accept time. The authoritative check is ``take``.
        """

    async def occupy(self, limit: str, key: str, holder: str) -> bool:
        """Take one of the places of (*limit*, *key*) for *holder*; False if all are held.

        *holder* names the place (unique per holder, e.g. per connection);
        occupying again under the same holder takes nothing more. Pair
        every call with :meth:`vacate`, whatever it answered or raised: a
        cancelled call may have taken the place. A shared adapter holds a
        place only while its process lives (a lease it renews).
        Raises KeyError for a *limit* with no policy.
        """

    async def vacate(self, limit: str, key: str, holder: str) -> None:
        """Give back *holder*'s place under (*limit*, *key*); a no-op if it holds none."""

    async def locked_for(self, lockout: str, key: str) -> float | None:
        """Seconds the key stays locked out, or None if it is not locked."""

    async def record_failure(self, lockout: str, key: str) -> float | None:
        """Count a failure; return the lock's seconds if this locked the key."""

    async def clear_failures(self, lockout: str, key: str) -> None:
        """Forget the key's failures (after a success); an active lock stays."""

    async def unlock(self, lockout: str, key: str) -> bool:
        """Lift the key's lock and forget its failures; True if there was any."""

    async def unlock_prefix(self, lockout: str, prefix: str) -> int:
        """Lift every lock whose key starts with *prefix*; how many there were."""

    async def remember(self, key: str, member: str, ttl: float) -> None:
        """Know *member* under *key* (e.g. an IP a user logged in from) for *ttl* seconds."""

    async def knows(self, key: str, member: str) -> bool:
        """True if *member* is remembered under *key*."""

    async def refusing(self, limit: int) -> list[Refusing]:
        """Up to *limit* (limit or lockout, key) pairs refusing right now (for operators)."""

    async def revoke(self, session_id: str, ttl: float) -> None:
        """Treat the session as revoked for the next *ttl* seconds."""

    async def is_revoked(self, session_id: str) -> bool: ...

    async def ping(self) -> None:
        """Return if the limits are shared as configured; raise otherwise (readiness)."""
