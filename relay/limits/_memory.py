"""The embedded Limits adapter: everything in this process's memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

from ._bucket import KeyedBuckets
from ._known import KnownSources
from ._lockout import Lockout
from ._places import Places
from ._policies import Policies
from ._port import Refusing
from ._revocation import RevocationList

# Sweep the revocation list when it has doubled since the last sweep (and
# holds at least this many): amortised O(1) per revoke, and at most about
# twice the live revocations in memory without any background task.
_MIN_REVOCATION_SWEEP = 1024

MAX_KEY_CHARS = 128
"""Longer keys are stored as their SHA-256: an outsider's 4 KB key costs 71 bytes."""


def bounded_key(key: str) -> str:
    """*key*, or a fixed-size digest of it when it is longer than MAX_KEY_CHARS."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class MemoryLimits:
    """:class:`~relay.limits.Limits` for a single process, kept in memory.

    Each method runs to completion without yielding (it is not a Trio
    checkpoint), so a sequence such as ``locked_for`` then ``record_failure``
    in one task is not interleaved with other tasks' calls. Times come from
    *clock* (Trio's clock by default, so ``trio.testing.MockClock`` drives
    it in tests); callers pass only durations.

    Each limit, lockout and the known sources hold at most *max_keys* keys,
    and a key is at most :data:`MAX_KEY_CHARS` long (see :func:`bounded_key`);
    see :class:`~relay.limits.KeyedBuckets` and :class:`~relay.limits.Lockout`
    for what is forgotten first when full. Raises ValueError at construction
    for an unusable policy (a rate, burst, window or duration that is not
    positive and finite, or a threshold below 1).
    """

    def __init__(
        self,
        policies: Policies,
        clock: Callable[[], float] = trio.current_time,
        *,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock
        # Built eagerly so that a bad policy fails at startup, not at the
        # first request that uses it.
        self._buckets = {
            name: KeyedBuckets(policy, max_keys) for name, policy in policies.rates.items()
        }
        self._lockouts = {
            name: Lockout(policy, max_keys) for name, policy in policies.lockouts.items()
        }
        self._places = {name: Places(policy) for name, policy in policies.places.items()}
        self._known = KnownSources(max_keys=max_keys)
        self._revoked = RevocationList()
        self._next_revocation_sweep = _MIN_REVOCATION_SWEEP

    # -- token buckets ------------------------------------------------------
    async def take(self, limit: str, key: str, cost: float = 1.0) -> float | None:
        """Take *cost* tokens from bucket (*limit*, *key*).

        Returns None if allowed, else the seconds until it would be (for
        ``Retry-After``); a refused take consumes nothing. Raises KeyError
        for a *limit* with no policy, and ValueError unless
        ``0 <= cost <= burst`` (a larger cost could never be allowed).
        """
        return self._bucket(limit).take(bounded_key(key), self._clock(), cost)

    def blocked_for(self, limit: str, key: str) -> float | None:
        """Seconds until a take of 1 from (*limit*, *key*) would succeed; None if now.

        Synchronous and read-only: cheap enough to ask for every accepted
        socket, before any HTTP parsing.
        """
        return self._bucket(limit).wait(bounded_key(key), self._clock())

    def _bucket(self, limit: str) -> KeyedBuckets:
        try:
            return self._buckets[limit]
        except KeyError:
            raise KeyError(f"no RatePolicy for limit {limit!r}") from None

    # -- places ---------------------------------------------------------------
    async def occupy(self, limit: str, key: str, holder: str) -> bool:
        """Take a place of (*limit*, *key*) for *holder*; False if all are held.

        Decided without yielding: simultaneous callers never exceed the cap.
        """
        return self._place(limit).occupy(bounded_key(key), holder)

    async def vacate(self, limit: str, key: str, holder: str) -> None:
        """Give back *holder*'s place, if it holds one."""
        self._place(limit).vacate(bounded_key(key), holder)

    def _place(self, limit: str) -> Places:
        try:
            return self._places[limit]
        except KeyError:
            raise KeyError(f"no PlacePolicy for limit {limit!r}") from None

    # -- failure windows ----------------------------------------------------
    async def locked_for(self, lockout: str, key: str) -> float | None:
        """Seconds the key stays locked out, or None if it is not locked."""
        return self._lockout(lockout).locked_for(bounded_key(key), self._clock())

    async def record_failure(self, lockout: str, key: str) -> float | None:
        """Count a failure; return the lock's seconds if this locked the key.

        While the key is locked, failures are ignored (they do not extend
        the lock) and None is returned.
        """
        return self._lockout(lockout).record_failure(bounded_key(key), self._clock())

    async def clear_failures(self, lockout: str, key: str) -> None:
        """Forget the key's failures (after a success); an active lock stays."""
        self._lockout(lockout).clear(bounded_key(key))

    async def unlock(self, lockout: str, key: str) -> bool:
        """Lift the key's lock and forget its failures; True if there was any."""
        return self._lockout(lockout).unlock(bounded_key(key))

    async def unlock_prefix(self, lockout: str, prefix: str) -> int:
        """Lift every lock whose key starts with *prefix* (e.g. ``"alice|"``); how many."""
        return self._lockout(lockout).unlock_prefix(prefix)

    def _lockout(self, name: str) -> Lockout:
        try:
            return self._lockouts[name]
        except KeyError:
            raise KeyError(f"no LockoutPolicy for lockout {name!r}") from None

    # -- known sources --------------------------------------------------------
    async def remember(self, key: str, member: str, ttl: float) -> None:
        """Know *member* under *key* for the next *ttl* seconds."""
        self._known.remember(bounded_key(key), bounded_key(member), self._clock() + ttl)

    async def knows(self, key: str, member: str) -> bool:
        return self._known.knows(bounded_key(key), bounded_key(member), self._clock())

    async def ping(self) -> None:
        """Always ready: the limits live in this process."""
        await trio.lowlevel.checkpoint()

    async def refusing(self, limit: int) -> list[Refusing]:
        """Buckets that are empty and keys that are locked, now; at most *limit*."""
        now = self._clock()
        found: list[Refusing] = []
        for name, buckets in self._buckets.items():
            for key in list(buckets):
                wait = buckets.wait(key, now)
                if wait is not None:
                    found.append(Refusing(name, key, wait))
        for name, lockout in self._lockouts.items():
            for key in lockout.held_keys():
                locked = lockout.locked_for(key, now)
                if locked is not None:
                    found.append(Refusing(name, key, locked))
        found.sort(key=lambda r: -r.seconds)
        return found[:limit]

    # -- revocations --------------------------------------------------------
    async def revoke(self, session_id: str, ttl: float) -> None:
        """Treat the session as revoked for the next *ttl* seconds (never shortening)."""
        now = self._clock()
        if ttl <= 0:
            return
        self._revoked.revoke(session_id, now + ttl)
        if len(self._revoked) >= self._next_revocation_sweep:
            self._revoked.sweep(now)
            self._next_revocation_sweep = max(_MIN_REVOCATION_SWEEP, 2 * len(self._revoked))

    async def is_revoked(self, session_id: str) -> bool:
        """True while the session is within a revocation's ttl."""
        return self._revoked.is_revoked(session_id, self._clock())
