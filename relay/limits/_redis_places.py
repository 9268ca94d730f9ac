"""Places on Redis: a cap on what is held at once, across processes, with leases.

A token bucket forgets by itself; a place does not: it is held until its
holder gives it back, and a process that dies (``kill -9``, a lost machine)
gives nothing back. So each place is a *lease* in Redis (a sorted set per
key: holder -> lease end, on Redis's clock), and the process renews the
leases of every place it holds every third of ``place_ttl``. A dead
process's places are free again within ``place_ttl``; a live one's never
lapse while Redis answers.

While Redis is down, places are taken by this process alone (each limit's
fail mode says so, :mod:`relay.limits._unavailable`: at most the cap in
this process, counting the places Redis granted it before) and remembered; when
Redis is back (or lost its data) every place held here is written again, so
the shared count is whole as soon as it can be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from . import _lua
from ._keys import KeySpace
from ._memory import bounded_key
from ._port import PlacePolicy
from ._redis_batch import Script
from ._redis_guard import RedisGuard
from ._unavailable import FailMode

PLACE_TTL = 30.0
"""Seconds a place outlives the process holding it (``[limits] place_ttl``)."""

RENEW_BATCH = 512
"""Keys whose leases are renewed at once (the batcher's pipeline size)."""

ScriptCall = Callable[..., Awaitable[Any]]


class RedisPlaces:
    """The ``occupy``/``vacate`` half of :class:`~relay.limits.RedisLimits`.

    *run_script* runs a script on a key with arguments (the adapter's
    batcher); *guard* answers by fail mode while Redis is down.
    """

    def __init__(
        self,
        policies: Mapping[str, PlacePolicy],
        keys: KeySpace,
        run_script: ScriptCall,
        guard: RedisGuard,
        *,
        place_ttl: float = PLACE_TTL,
    ) -> None:
        if not place_ttl > 0:
            raise ValueError(f"place_ttl must be positive, got {place_ttl!r}")
        self._policies = dict(policies)
        self._keys = keys
        self._script = run_script
        self._guard = guard
        self.ttl = place_ttl
        # (limit, bounded key) -> this process's holders: what it renews.
        self._held: dict[tuple[str, str], set[str]] = {}
        self._occupy = Script(_lua.OCCUPY)
        self._vacate = Script(_lua.VACATE)
        self._renew = Script(_lua.RENEW)

    async def occupy(self, limit: str, key: str, holder: str) -> bool:
        """Take a place for *holder*, atomically across processes; False if all are held."""
        policy = self._policy(limit)
        key = bounded_key(key)

        async def shared() -> bool:
            reply = await self._script(
                self._occupy, self._keys.places(limit, key), policy.cap, self.ttl, holder
            )
            return bool(int(reply))

        async def alone() -> bool:
            # Every place this process holds counts, those Redis granted too:
            # alone, one process never lets a user past the cap.
            holders = self._held.get((limit, key), ())
            return holder in holders or len(holders) < policy.cap

        granted = await self._guard.either(limit, shared, alone)
        if granted:
            self._held.setdefault((limit, key), set()).add(holder)
        return granted

    async def vacate(self, limit: str, key: str, holder: str) -> None:
        """Give back *holder*'s place. Never refused: unreachable, the lease lapses."""
        self._policy(limit)
        key = bounded_key(key)
        holders = self._held.get((limit, key))
        if holders is not None:
            holders.discard(holder)
            if not holders:
                del self._held[(limit, key)]

        # From here to the script's place in the batcher's queue nothing
        # yields: a renewal that read the holders before this queued its
        # script before this one, and one that reads them after omits it.
        async def shared() -> None:
            await self._script(self._vacate, self._keys.places(limit, key), holder)

        await self._guard.either(limit, shared, trio.lowlevel.checkpoint, mode=FailMode.OPEN)

    async def run(self) -> None:
        """Renew every place held here, every third of ``place_ttl``; returns by cancellation."""
        while True:
            await trio.sleep(self.ttl / 3)
            if self._guard.up:
                await self.renew(restore=False)

    async def renew(self, *, restore: bool) -> None:
        """Extend the leases of the places held here (*restore*: write them again).

        Keys go out :data:`RENEW_BATCH` at a time, concurrently, so that the
        adapter's batcher sends each batch as one pipeline.
        """
        keys = list(self._held)
        for start in range(0, len(keys), RENEW_BATCH):
            if not self._guard.up:
                return
            async with trio.open_nursery() as nursery:
                for limit, key in keys[start : start + RENEW_BATCH]:
                    nursery.start_soon(self._renew_one, limit, key, restore)

    async def _renew_one(self, limit: str, key: str, restore: bool) -> None:
        name = self._keys.places(limit, key)

        async def shared() -> None:
            # The holders are read as the script is queued, not before: a
            # place given back meanwhile must not be written again (restore).
            holders = sorted(self._held.get((limit, key), ()))
            if holders:
                await self._script(self._renew, name, self.ttl, int(restore), *holders)

        await self._guard.either(limit, shared, trio.lowlevel.checkpoint, mode=FailMode.OPEN)

    def _policy(self, limit: str) -> PlacePolicy:
        try:
            return self._policies[limit]
        except KeyError:
            raise KeyError(f"no PlacePolicy for limit {limit!r}") from None
