"""The shared Limits adapter: every limit in Redis, so that N processes enforce one.

Each call is one Lua script on one key (:mod:`relay.limits._lua`), so
concurrent calls from any number of processes are serialised by Redis and
never grant more than the bucket holds. Time is Redis's own (``TIME`` inside
the scripts): one clock for every process, whatever their machines' clocks
say (ADR 0008).

While Redis cannot be reached the adapter does not wait for it call after
call: the first failure marks it *down*, and until a probe succeeds every
call answers at once by its limit's unavailability policy
(:mod:`relay.limits._unavailable`): enforced by this process alone, or
refused with :class:`LimitsUnavailable`. When Redis answers again the
adapter writes back what it could not (revocations) and asks the relay to
restore the revocation list from the store (:meth:`RedisLimits.restore_with`),
as it does when Redis comes back having lost its data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import coredis
import trio
from coredis.tokens import PureToken

from ..errors import Unavailable
from ..obs import Logger
from ..resp import RedisAddress, RespClient
from . import _lua
from ._bucket import TokenBucket
from ._keys import KeySpace
from ._memory import MemoryLimits, bounded_key
from ._policies import Policies
from ._port import LockoutPolicy, RatePolicy, Refusing
from ._redis_batch import Script, ScriptBatcher
from ._redis_client import FAILED, TIMEOUT, redis_client
from ._redis_guard import RedisGuard
from ._redis_places import PLACE_TTL, RedisPlaces
from ._refusals import RecentRefusals
from ._revocation import RevocationList
from ._unavailable import FAIL_MODES, FailMode, LimitsUnavailable

T = TypeVar("T")

PER_KEY_SOURCES = 8
"""Known sources kept per key (as in the memory adapter)."""
SLACK = 1.0
"""Seconds a key outlives the state it holds (on Redis's clock)."""
INJECTED_CLOCK_SLACK = 86_400.0
"""... and with an injected clock, whose time has nothing to do with Redis's."""
CHECK_INTERVAL = 1.0
"""Seconds between checks that Redis is there (or back) and still has our data."""
SCAN_LIMIT = 10_000
"""At most this many keys of each kind are looked at by ``refusing`` (an operator's view)."""

RestoreHook = Callable[[], Awaitable[object]]


class RedisLimits:
    """:class:`~relay.limits.Limits` in Redis, shared by every relay process on it.

    Answers exactly as :class:`~relay.limits.MemoryLimits` would with the
    same calls at the same times. Keys are bounded as there
    (:func:`~relay.limits.bounded_key`); everything lives under *prefix*
    (:class:`~relay.limits._keys.KeySpace`) and expires once it no longer
    changes any answer.

    *clock* None (production) takes time from Redis; a callable (tests) is
    used instead, so that tests can move time. *local_clock* is this
    process's monotonic clock: the refusal cache behind :meth:`blocked_for`,
    log sampling, and the in-process limits used while Redis is down.
    *revoked_in_store* answers :meth:`is_revoked` while Redis is down (the
    store records every revocation); without it such a call is refused.
    *fail_modes* maps limit names to their unavailability policy; *slack*
    is how long a key outlives its state (default :data:`SLACK`);
    *place_ttl* how long a place outlives a process that stopped renewing
    it (:mod:`relay.limits._redis_places`).

    Every method is cancellation-safe: a cancelled call may or may not have
    reached Redis, as with any request that was sent. Run :meth:`run` in a
    nursery (:func:`open_redis_limits` does).
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        address: RedisAddress,
        policies: Policies,
        *,
        prefix: str,
        log: Logger,
        clock: Callable[[], float] | None = None,
        local_clock: Callable[[], float] = trio.current_time,
        revoked_in_store: Callable[[str], Awaitable[bool]] | None = None,
        fail_modes: Mapping[str, FailMode] = FAIL_MODES,
        slack: float | None = None,
        place_ttl: float = PLACE_TTL,
    ) -> None:
        self._client = client
        self._rates = dict(policies.rates)
        self._lockouts = dict(policies.lockouts)
        self._keys = KeySpace(prefix)
        self._log = log
        self._clock = clock
        self._local = local_clock
        if slack is None:
            slack = SLACK if clock is None else INJECTED_CLOCK_SLACK
        self._slack = repr(float(slack))
        self._revoked_in_store = revoked_in_store
        # Validates every policy now (a bad one fails at start), and is the
        # in-process enforcement of the limits that fail open.
        self._alone = MemoryLimits(policies, clock=local_clock)
        self._refusals = RecentRefusals()
        self._pending = RevocationList()  # revoked while down; written back on recovery
        self._guard = RedisGuard(log, local_clock, fail_modes)
        self._restore: RestoreHook | None = None
        self._restore_due = False
        self._lost_data = False
        # The scripts' pipelines (the hot path) go on a RESP connection of their own.
        self._batcher = ScriptBatcher(RespClient(address, timeout=TIMEOUT))
        self._take = Script(_lua.TAKE)
        self._locked_for = Script(_lua.LOCKED_FOR)
        self._record_failure = Script(_lua.RECORD_FAILURE)
        self._clear_failures = Script(_lua.CLEAR_FAILURES)
        self._remember = Script(_lua.REMEMBER)
        self._knows = Script(_lua.KNOWS)
        self._revoke = Script(_lua.REVOKE)
        self._is_revoked = Script(_lua.IS_REVOKED)
        self._places = RedisPlaces(
            policies.places, self._keys, self._script, self._guard, place_ttl=place_ttl
        )

    @property
    def available(self) -> bool:
        """False from a failed call until a probe reaches Redis again."""
        return self._guard.up

    def restore_with(self, hook: RestoreHook) -> None:
        """Call *hook* (rebuild the revocation list) when Redis is back or lost its data."""
        self._restore = hook

    # -- token buckets ------------------------------------------------------
    async def take(self, limit: str, key: str, cost: float = 1.0) -> float | None:
        """Take *cost* tokens from bucket (*limit*, *key*), atomically across processes.

        Returns None if allowed, else the seconds until it would be; a
        refused take consumes nothing. Raises KeyError for a *limit* with no
        policy, ValueError unless ``0 <= cost <= burst``, and
        :class:`LimitsUnavailable` while Redis is down if the limit fails closed.
        """
        policy = self._rate(limit)
        if not 0 <= cost <= policy.burst:
            raise ValueError(f"cost must be between 0 and burst ({policy.burst}), got {cost!r}")
        key = bounded_key(key)

        async def shared() -> float | None:
            reply = await self._script(
                self._take, self._keys.bucket(limit, key), policy.rate, policy.burst, cost
            )
            granted, wait = _pair(reply)
            self._refusals.note(limit, key, self._local(), wait)
            return None if granted else wait

        async def alone() -> float | None:
            wait = await self._alone.take(limit, key, cost)
            self._refusals.note(limit, key, self._local(), self._alone.blocked_for(limit, key))
            return wait

        return await self._guard.either(limit, shared, alone)

    def blocked_for(self, limit: str, key: str) -> float | None:
        """Seconds until a take of 1 would succeed, from this process's recent takes.

        Synchronous and local (see :mod:`relay.limits._refusals`): after this
        process's own takes it answers as the memory adapter would; takes by
        other processes show only in :meth:`take`'s answers.
        """
        self._rate(limit)
        return self._refusals.blocked_for(limit, bounded_key(key), self._local())

    # -- places ---------------------------------------------------------------
    async def occupy(self, limit: str, key: str, holder: str) -> bool:
        """Take a place of (*limit*, *key*) for *holder*, atomically across processes.

        The place is a lease this process renews while it runs; False if all
        places are held. Raises KeyError for a *limit* with no policy.
        """
        return await self._places.occupy(limit, key, holder)

    async def vacate(self, limit: str, key: str, holder: str) -> None:
        """Give back *holder*'s place (never refused: if Redis is down, the lease lapses)."""
        await self._places.vacate(limit, key, holder)

    # -- failure windows ----------------------------------------------------
    async def locked_for(self, lockout: str, key: str) -> float | None:
        """Seconds the key stays locked out, or None if it is not locked."""
        policy = self._lockout(lockout)
        key = bounded_key(key)

        async def shared() -> float | None:
            reply = await self._script(
                self._locked_for, self._keys.lockout(lockout, key), policy.duration
            )
            return _seconds(reply)

        return await self._guard.either(
            lockout, shared, lambda: self._alone.locked_for(lockout, key)
        )

    async def record_failure(self, lockout: str, key: str) -> float | None:
        """Count a failure; the lock's seconds if this locked the key (ignored while locked)."""
        policy = self._lockout(lockout)
        key = bounded_key(key)

        async def shared() -> float | None:
            reply = await self._script(
                self._record_failure,
                self._keys.lockout(lockout, key),
                policy.threshold,
                policy.window,
                policy.duration,
            )
            return _seconds(reply)

        return await self._guard.either(
            lockout, shared, lambda: self._alone.record_failure(lockout, key)
        )

    async def clear_failures(self, lockout: str, key: str) -> None:
        """Forget the key's failures; an active lock stays. Never refused: it only forgives."""
        self._lockout(lockout)
        key = bounded_key(key)

        async def shared() -> None:
            await self._script(self._clear_failures, self._keys.lockout(lockout, key))

        await self._guard.either(
            lockout, shared, lambda: self._alone.clear_failures(lockout, key), mode=FailMode.OPEN
        )

    async def unlock(self, lockout: str, key: str) -> bool:
        """Lift the key's lock and forget its failures; True if there was any."""
        self._lockout(lockout)
        name = self._keys.lockout(lockout, bounded_key(key))
        return await self._operator(lambda: self._client.delete([name])) > 0

    async def unlock_prefix(self, lockout: str, prefix: str) -> int:
        """Lift every lock whose key starts with *prefix* (SCAN, then DEL); how many.

        Not atomic: a lock taken during the scan may be missed (an operator's call).
        """
        self._lockout(lockout)
        pattern = self._keys.lockouts_matching(lockout, prefix)

        async def scan_and_delete() -> int:
            names = [name async for name in self._client.scan_iter(match=pattern, count=1000)]
            deleted = 0
            for start in range(0, len(names), 500):
                deleted += await self._client.delete(names[start : start + 500])
            return deleted

        return await self._operator(scan_and_delete)

    # -- known sources --------------------------------------------------------
    async def remember(self, key: str, member: str, ttl: float) -> None:
        """Know *member* under *key* for *ttl* seconds (at most 8 per key). Never refused."""
        name, member = self._keys.known(bounded_key(key)), bounded_key(member)

        async def shared() -> None:
            await self._script(self._remember, name, member, ttl, PER_KEY_SOURCES)

        await self._guard.either(
            "known", shared, lambda: self._alone.remember(key, member, ttl), mode=FailMode.OPEN
        )

    async def knows(self, key: str, member: str) -> bool:
        """True if *member* is remembered under *key*; refused while Redis is down."""
        name, member = self._keys.known(bounded_key(key)), bounded_key(member)

        async def shared() -> bool:
            return bool(await self._script(self._knows, name, member))

        return await self._guard.either("known", shared, _refuse)

    async def ping(self) -> None:
        """Return if Redis answers; raise while it is down (limits counted per process)."""
        if not self.available:
            raise ConnectionError("the limits cannot reach Redis; each process counts alone")
        await self._client.ping()

    async def refusing(self, limit: int) -> list[Refusing]:
        """Up to *limit* buckets that are empty and keys that are locked, longest first.

        Looks at no more than :data:`SCAN_LIMIT` keys of each kind.
        """
        return await self._operator(lambda: self._scan_refusing(limit))

    async def _scan_refusing(self, limit: int) -> list[Refusing]:
        now = self._clock() if self._clock is not None else (await self._client.time()).timestamp()
        found: list[Refusing] = []
        for pattern, fields in (
            (self._keys.buckets_matching(), ("t", "u")),
            (self._keys.lockouts_matching(), ("l", "l")),
        ):
            names: list[str] = []
            async for name in self._client.scan_iter(match=pattern, count=1000):
                names.append(name)
                if len(names) >= SCAN_LIMIT:
                    break
            async with self._client.pipeline(transaction=False) as pipe:
                replies = [pipe.hmget(name, list(fields)) for name in names]
            for name, reply in zip(names, replies, strict=True):
                refusal = self._refusal(name, await reply, now)
                if refusal is not None:
                    found.append(refusal)
        found.sort(key=lambda r: -r.seconds)
        return found[:limit]

    def _refusal(self, name: str, state: tuple[str | None, ...], now: float) -> Refusing | None:
        parsed = self._keys.parse(name)
        if parsed is None or state[0] is None:
            return None
        limit, key = parsed
        rate, lockout = self._rates.get(limit), self._lockouts.get(limit)
        if rate is not None and name.startswith(self._keys.prefix + "tb:") and state[1]:
            bucket = TokenBucket(rate, now)
            bucket.tokens, bucket.updated = float(state[0]), float(state[1])
            wait = bucket.wait(now)
        elif lockout is not None:
            remaining = lockout.duration - (now - float(state[0]))
            wait = remaining if remaining > 0 else None
        else:
            return None
        return None if wait is None else Refusing(limit, key, wait)

    # -- revocations --------------------------------------------------------
    async def revoke(self, session_id: str, ttl: float) -> None:
        """Treat the session as revoked for *ttl* seconds (never shortening). Never refused:
        while Redis is down it is held here and written back when Redis returns."""
        if ttl <= 0:
            return

        async def shared() -> None:
            await self._script(self._revoke, self._keys.revoked(bounded_key(session_id)), ttl)

        async def alone() -> None:
            self._pending.revoke(session_id, self._local() + ttl)

        await self._guard.either("revocation", shared, alone, mode=FailMode.OPEN)

    async def is_revoked(self, session_id: str) -> bool:
        """True while the session is within a revocation's ttl.

        While Redis is down: revoked here meanwhile, or else the store's
        answer (*revoked_in_store*); refused (:class:`LimitsUnavailable`)
        when there is no store to ask.
        """

        async def shared() -> bool:
            name = self._keys.revoked(bounded_key(session_id))
            return bool(await self._script(self._is_revoked, name))

        async def alone() -> bool:
            if self._pending.is_revoked(session_id, self._local()):
                return True
            if self._revoked_in_store is None:
                raise LimitsUnavailable("no store to ask")
            return await self._revoked_in_store(session_id)

        return await self._guard.either("revocation", shared, alone, mode=FailMode.OPEN)

    # -- availability -------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the scripts' calls, and check Redis every second: down, up, recovered.

        Supports ``nursery.start()``: started after the first check, whatever
        its outcome (a relay starts while Redis is down, and heals later).
        Returns only by cancellation.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._batcher.run)
            nursery.start_soon(self._places.run)
            await self._check(first=True)
            task_status.started()
            while True:
                await trio.sleep(CHECK_INTERVAL)
                await self._check(first=False)

    async def _check(self, *, first: bool) -> None:
        """One round trip that both proves Redis is there and that it kept our data.

        ``{prefix}alive`` is written once and never expires: if it is gone,
        Redis restarted empty (or was flushed), and everything it held —
        revocations included — must be written again.
        """
        try:
            kept = await self._client.set(self._keys.alive, "1", condition=PureToken.NX, get=True)
        except FAILED as exc:  # unreachable, or refusing us (a wrong password): down either way
            self._guard.went_down(exc)
            return
        down_for = self._guard.came_back()
        lost = kept is None and not first
        if down_for is not None or lost:
            self._restore_due = True
            self._lost_data = self._lost_data or lost
            self._log.warning(
                "limits.redis_recovered", down_for=round(down_for or 0.0, 3), data_lost=lost
            )
        if self._restore_due:
            await self._recover()

    async def _recover(self) -> None:
        """Write back the revocations and places held here; have the relay restore the store's.

        Until both are done (the store may be failing too) every check tries again.
        """
        now = self._local()
        held, self._pending = self._pending, RevocationList()
        for session_id, until in held.items():
            if until > now:
                await self.revoke(session_id, until - now)  # back to pending if down again
        await self._places.renew(restore=True)
        if not self._guard.up:
            return
        if self._restore is not None:
            try:
                await self._restore()
            except Unavailable as exc:
                self._log.error("limits.restore_failed", error=exc.code)
                return
        self._restore_due = self._lost_data = False

    async def _operator(self, call: Callable[[], Awaitable[T]]) -> T:
        """An operator's call: done on Redis, or refused (it must not pretend)."""
        return await self._guard.either("operator", call, _refuse, mode=FailMode.CLOSED)

    async def _script(self, script: Script, key: str, *args: object) -> Any:
        now = "" if self._clock is None else repr(self._clock())
        values = [now, self._slack, *(repr(a) if isinstance(a, float) else str(a) for a in args)]
        return await self._batcher.call(script, key, values)

    def _rate(self, limit: str) -> RatePolicy:
        try:
            return self._rates[limit]
        except KeyError:
            raise KeyError(f"no RatePolicy for limit {limit!r}") from None

    def _lockout(self, name: str) -> LockoutPolicy:
        try:
            return self._lockouts[name]
        except KeyError:
            raise KeyError(f"no LockoutPolicy for lockout {name!r}") from None


async def _refuse() -> Any:
    raise LimitsUnavailable()


def _seconds(reply: object) -> float | None:
    return None if reply is None or reply == "" else float(str(reply))


def _pair(reply: object) -> tuple[bool, float | None]:
    assert isinstance(reply, list | tuple) and len(reply) == 2, reply
    granted, wait = reply
    return bool(int(granted)), _seconds(wait)


@asynccontextmanager
async def open_redis_limits(
    url: str,
    policies: Policies,
    *,
    prefix: str,
    log: Logger,
    local_clock: Callable[[], float] = trio.current_time,
    clock: Callable[[], float] | None = None,
    revoked_in_store: Callable[[str], Awaitable[bool]] | None = None,
    slack: float | None = None,
    place_ttl: float = PLACE_TTL,
) -> AsyncIterator[RedisLimits]:
    """A :class:`RedisLimits` on *url*, running its tasks (:meth:`RedisLimits.run`) until exit.

    Does not wait for Redis: if it is down the adapter starts down and
    recovers by itself. On exit its tasks are cancelled and the client closed.
    """
    client = redis_client(url)
    limits = RedisLimits(  # before any task: a bad policy raises ValueError itself
        client,
        RedisAddress.parse(url),
        policies,
        prefix=prefix,
        log=log,
        clock=clock,
        local_clock=local_clock,
        revoked_in_store=revoked_in_store,
        slack=slack,
        place_ttl=place_ttl,
    )
    async with client, trio.open_nursery() as nursery:
        await nursery.start(limits.run)
        try:
            yield limits
        finally:
            nursery.cancel_scope.cancel()
