"""RedisLimits on a real Redis: one limit across processes, Redis's clock, and outages.

The shared contract (identical answers to the memory adapter) is in
``tests/unit/limits/test_contract.py``; this module checks what only a
shared store has. An outage is a :class:`~tests.redisproxy.RedisProxy` the
test stops. Skipped, saying why, when no Redis is reachable.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from relay.config import Config
from relay.errors import Unavailable
from relay.limits import (
    LimitsUnavailable,
    PlacePolicy,
    Policies,
    RatePolicy,
    RedisLimits,
    names,
    open_redis_limits,
    policies,
    redis_client,
)
from relay.obs import get_logger
from tests.conftest import LogCapture
from tests.redisproxy import RedisProxy

RELAY_POLICIES = policies(Config())


@asynccontextmanager
async def opened(
    url: str, prefix: str, limits_policies: Policies = RELAY_POLICIES, **kw: Any
) -> AsyncIterator[RedisLimits]:
    async with open_redis_limits(
        url, limits_policies, prefix=prefix, log=get_logger("relay"), **kw
    ) as limits:
        yield limits


async def keys_under(url: str, prefix: str) -> list[str]:
    async with redis_client(url) as client:
        return [key async for key in client.scan_iter(match=f"{prefix}*")]


# --- one limit for every process ------------------------------------------------


async def test_two_processes_taking_at_once_never_get_more_than_the_bucket_holds(
    redis_url: str, redis_prefix: str
) -> None:
    """200 simultaneous takes through two adapters (two clients) on a burst of 50: 50 granted."""
    bucket = Policies(rates={"x": RatePolicy(rate=0.001, burst=50)})
    granted: list[bool] = []
    async with (
        opened(redis_url, redis_prefix, bucket) as one,
        opened(redis_url, redis_prefix, bucket) as two,
    ):

        async def take(limits: RedisLimits) -> None:
            granted.append(await limits.take("x", "shared") is None)

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(take, one if n % 2 else two)
    assert len(granted) == 200
    assert granted.count(True) == 50


# --- places: a cap on what is held at once, across processes ---------------------

PLACES = Policies(places={"conns": PlacePolicy(cap=3)})


async def test_two_processes_occupying_at_once_never_hold_more_than_the_cap(
    redis_url: str, redis_prefix: str
) -> None:
    """40 simultaneous occupies of one user's places through two adapters, cap 3: 3 held."""
    held: list[bool] = []
    async with (
        opened(redis_url, redis_prefix, PLACES) as one,
        opened(redis_url, redis_prefix, PLACES) as two,
    ):

        async def occupy(limits: RedisLimits, holder: str) -> None:
            held.append(await limits.occupy("conns", "alice", holder))

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(occupy, one if n % 2 else two, f"h{n}")
        assert held.count(True) == 3
        await one.vacate("conns", "alice", "stranger")  # a holder never seen frees nothing
        assert not await two.occupy("conns", "alice", "late")


async def test_a_place_given_back_on_one_process_is_free_on_the_other(
    redis_url: str, redis_prefix: str
) -> None:
    """Process A vacates one of its places; process B takes it."""
    async with (
        opened(redis_url, redis_prefix, PLACES) as a,
        opened(redis_url, redis_prefix, PLACES) as b,
    ):
        assert [await a.occupy("conns", "alice", h) for h in ("a1", "a2", "a3")] == [True] * 3
        assert not await b.occupy("conns", "alice", "b1")
        await a.vacate("conns", "alice", "a2")
        assert await b.occupy("conns", "alice", "b1")


async def test_a_live_process_keeps_its_places_past_their_ttl(
    redis_url: str, redis_prefix: str
) -> None:
    """Leases of 0.5 s, renewed every third of it: after 1.5 s they are all still held."""
    async with (
        opened(redis_url, redis_prefix, PLACES, place_ttl=0.5) as a,
        opened(redis_url, redis_prefix, PLACES, place_ttl=0.5) as b,
    ):
        for holder in ("a1", "a2", "a3"):
            await a.occupy("conns", "alice", holder)
        await trio.sleep(1.5)
        assert not await b.occupy("conns", "alice", "b1")


async def test_a_dead_process_frees_its_places_within_their_ttl(
    redis_url: str, redis_prefix: str
) -> None:
    """A process that stops without giving its places back (kill -9) frees them in place_ttl."""
    async with opened(redis_url, redis_prefix, PLACES, place_ttl=0.5) as b:
        async with opened(redis_url, redis_prefix, PLACES, place_ttl=0.5) as a:
            for holder in ("a1", "a2", "a3"):
                await a.occupy("conns", "alice", holder)
        # a is gone: no vacate was sent, its renewals stopped.
        assert not await b.occupy("conns", "alice", "b1")
        died = trio.current_time()
        with trio.fail_after(3):
            while not await b.occupy("conns", "alice", "b1"):
                await trio.sleep(0.05)
        assert trio.current_time() - died <= 0.5 + 0.5  # the ttl, and the polling's slack


async def test_without_an_injected_clock_redis_keeps_the_time(
    redis_url: str, redis_prefix: str
) -> None:
    """On Redis's clock: a refusal's wait, slept for real, is enough."""
    fast = Policies(rates={"x": RatePolicy(rate=20.0, burst=1)})
    async with opened(redis_url, redis_prefix, fast) as limits:
        assert await limits.take("x", "k") is None
        wait = await limits.take("x", "k")
        assert wait is not None and 0 < wait <= 0.05
        await trio.sleep(wait + 0.005)
        assert await limits.take("x", "k") is None


async def test_state_that_no_longer_matters_leaves_redis(redis_url: str, redis_prefix: str) -> None:
    """A refilled bucket, an expired lockout window and an expired revocation: no keys left.

    Each key matters for 0.5 s (plus 0.1 s of slack): long enough to be seen
    on a busy machine (a 60 ms life made this test flaky), and each must say
    so in its TTL.
    """
    from relay.limits import LockoutPolicy

    quick = Policies(
        rates={"x": RatePolicy(rate=2.0, burst=1)},
        lockouts={"y": LockoutPolicy(threshold=3, window=0.5, duration=0.5)},
    )
    async with opened(redis_url, redis_prefix, quick, slack=0.1) as limits:
        await limits.take("x", "k")
        await limits.record_failure("y", "k")
        await limits.revoke("s1", 0.5)
        kept = [k for k in await keys_under(redis_url, redis_prefix) if ":alive" not in k]
        assert len(kept) == 3
        async with redis_client(redis_url) as client:
            ttls = [await client.pttl(key) for key in kept]
        assert all(0 < ttl <= 600 for ttl in ttls), ttls
        await trio.sleep(0.8)
        assert [k for k in await keys_under(redis_url, redis_prefix) if ":alive" not in k] == []


async def test_blocked_for_answers_from_this_process_without_redis(
    redis_url: str, redis_prefix: str, nursery: trio.Nursery
) -> None:
    """After a refused take, blocked_for needs no round trip: it answers even with Redis gone."""
    proxy = RedisProxy()
    await proxy.start(nursery)
    async with opened(proxy.url, redis_prefix) as limits:
        for _ in range(20):
            await limits.take(names.HANDSHAKE, "10.0.0.9")
        assert await limits.take(names.HANDSHAKE, "10.0.0.9") is not None
        proxy.stop()
        wait = limits.blocked_for(names.HANDSHAKE, "10.0.0.9")
        assert wait is not None and 0 < wait <= 0.5
        assert limits.blocked_for(names.HANDSHAKE, "10.0.0.10") is None


# --- while Redis is down ------------------------------------------------------------


@pytest.fixture
async def outage(
    redis_prefix: str, nursery: trio.Nursery
) -> AsyncIterator[tuple[RedisLimits, RedisProxy, list[str]]]:
    """Limits whose Redis has just gone away; the sessions the store says are revoked."""
    proxy = RedisProxy()
    await proxy.start(nursery)
    in_store = ["revoked-in-store"]
    restored: list[str] = []

    async def revoked_in_store(session_id: str) -> bool:
        return session_id in in_store

    async with opened(proxy.url, redis_prefix, revoked_in_store=revoked_in_store) as limits:

        async def restore() -> None:
            restored.append("restored")

        limits.restore_with(restore)
        assert await limits.take(names.LOGIN, "10.0.0.1") is None  # connected and working
        proxy.stop()
        yield limits, proxy, restored


async def test_logging_in_and_signing_up_fail_closed(outage: Any) -> None:
    """LOGIN, REGISTER and the lockouts refuse: 503 limits_unavailable, retry in 5 s."""
    limits, _, _ = outage
    calls = [
        limits.take(names.LOGIN, "10.0.0.1"),
        limits.take(names.REGISTER, "10.0.0.1"),
        limits.take(names.GUARDED_LOGIN, "alice|10.0.0.1"),
        limits.locked_for(names.LOGIN_FAILURES, "alice|10.0.0.1"),
        limits.locked_for(names.LOGIN_FAILURES_USER, "alice"),
        limits.record_failure(names.LOGIN_FAILURES, "alice|10.0.0.1"),
        limits.knows("known:alice", "10.0.0.1"),
    ]
    for call in calls:
        with pytest.raises(LimitsUnavailable) as refused:
            await call
        assert isinstance(refused.value, Unavailable)
        assert (refused.value.code, refused.value.retry_after) == ("limits_unavailable", 5.0)
    assert not limits.available


async def test_connected_clients_are_limited_by_each_process_alone(outage: Any) -> None:
    """Sends, handshakes and connections fail open onto this process's own limits: served,
    still bounded."""
    limits, _, _ = outage
    assert [await limits.take(names.SEND, "d1") for _ in range(200)] == [None] * 200
    assert await limits.take(names.SEND, "d1") is not None
    assert await limits.take(names.SEND_USER, "u1") is None
    assert await limits.take(names.HANDSHAKE, "10.0.0.1") is None
    assert await limits.take(names.KEYS_FETCH, "d1") is None
    assert limits.blocked_for(names.SEND, "d1") is not None
    cap = RELAY_POLICIES.places[names.CONNECTIONS_USER].cap
    held = [await limits.occupy(names.CONNECTIONS_USER, "u1", f"c{n}") for n in range(cap + 1)]
    assert held == [True] * cap + [False]


async def test_calls_that_only_forgive_never_fail(outage: Any) -> None:
    """Clearing failures, remembering a source after a good login and giving back a place
    are skipped quietly."""
    limits, _, _ = outage
    await limits.clear_failures(names.LOGIN_FAILURES, "alice|10.0.0.1")
    await limits.remember("known:alice", "10.0.0.1", 60)
    await limits.vacate(names.CONNECTIONS_USER, "u1", "c1")


async def test_revocations_are_answered_by_the_store_and_this_process(outage: Any) -> None:
    """is_revoked asks the store; a revocation made meanwhile is held here."""
    limits, _, _ = outage
    assert await limits.is_revoked("revoked-in-store")
    assert not await limits.is_revoked("never-revoked")
    await limits.revoke("revoked-meanwhile", 900)
    assert await limits.is_revoked("revoked-meanwhile")


async def test_operator_calls_are_refused_rather_than_pretend(outage: Any) -> None:
    """unlock, unlock_prefix and refusing answer 503: an operator must not be told "done"."""
    limits, _, _ = outage
    for call in (
        limits.unlock(names.LOGIN_FAILURES_USER, "alice"),
        limits.unlock_prefix(names.LOGIN_FAILURES, "alice|"),
        limits.refusing(10),
    ):
        with pytest.raises(LimitsUnavailable):
            await call


async def test_the_outage_is_one_security_event_per_limit_every_ten_seconds(
    outage: Any, logs: LogCapture
) -> None:
    """limits.redis_unavailable is sampled per limit, naming its mode."""
    limits, _, _ = outage
    for _ in range(50):
        await limits.take(names.SEND, "d1")
        with pytest.raises(LimitsUnavailable):
            await limits.take(names.LOGIN, "10.0.0.1")
    events = [r for r in logs.records() if r["event"] == "limits.redis_unavailable"]
    assert sorted((r["limit"], r["mode"]) for r in events) == [
        (names.LOGIN, "closed"),
        (names.SEND, "open"),
    ]
    assert [r["event"] for r in logs.records()].count("limits.redis_unreachable") == 1


async def test_limits_recover_by_themselves_and_write_back_what_they_held(
    outage: Any, redis_url: str, redis_prefix: str, logs: LogCapture
) -> None:
    """Redis back: enforced there again, the revocation held here is written, the store's
    revocations restored, all without a restart."""
    limits, proxy, restored = outage
    await limits.revoke("revoked-meanwhile", 900)
    await proxy.resume()
    with trio.fail_after(5):
        while not limits.available or not restored:
            await trio.sleep(0.05)
    assert await limits.take(names.LOGIN, "10.0.0.1") is None
    async with opened(redis_url, redis_prefix) as elsewhere:
        assert await elsewhere.is_revoked("revoked-meanwhile")
    assert "limits.redis_recovered" in logs.events()


async def test_a_redis_that_lost_its_data_gets_the_revocations_back(
    redis_url: str, redis_prefix: str
) -> None:
    """Redis restarted empty (its marker is gone): the relay restores the revocation list."""
    restored = trio.Event()

    async def restore() -> None:
        restored.set()

    async with opened(redis_url, redis_prefix) as limits:
        limits.restore_with(restore)
        async with redis_client(redis_url) as client:
            await client.delete(await keys_under(redis_url, redis_prefix))
        with trio.fail_after(5):
            await restored.wait()


async def test_places_taken_during_an_outage_are_written_back(
    outage: Any, redis_url: str, redis_prefix: str
) -> None:
    """Connections admitted while Redis was away count across processes once it is back."""
    limits, proxy, restored = outage
    cap = RELAY_POLICIES.places[names.CONNECTIONS_USER].cap
    for n in range(cap):
        assert await limits.occupy(names.CONNECTIONS_USER, "u1", f"c{n}")
    await proxy.resume()
    with trio.fail_after(5):
        while not limits.available or not restored:
            await trio.sleep(0.05)
    async with opened(redis_url, redis_prefix) as elsewhere:
        assert not await elsewhere.occupy(names.CONNECTIONS_USER, "u1", "other")


async def test_alone_a_process_counts_the_places_redis_granted_it(
    redis_prefix: str, nursery: trio.Nursery
) -> None:
    """At the cap through Redis, then Redis goes: this process still refuses the next one."""
    conns = names.CONNECTIONS_USER  # fails open
    proxy = RedisProxy()
    await proxy.start(nursery)
    async with opened(proxy.url, redis_prefix, Policies(places={conns: PlacePolicy(3)})) as limits:
        for holder in ("a1", "a2", "a3"):
            assert await limits.occupy(conns, "alice", holder)
        proxy.stop()
        assert not await limits.occupy(conns, "alice", "a4")
        assert not limits.available
        await limits.vacate(conns, "alice", "a1")
        assert await limits.occupy(conns, "alice", "a4")


async def test_a_place_given_back_while_places_are_restored_stays_given_back(
    redis_url: str, redis_prefix: str
) -> None:
    """Writing the places back (after an outage) never writes one that was vacated meanwhile.

    1,200 users' places go back in three pipelines; the last user's place
    is given back while the first is on its way.
    """
    async with opened(redis_url, redis_prefix, PLACES) as a, opened(
        redis_url, redis_prefix, PLACES
    ) as b:
        for n in range(1200):
            await a.occupy("conns", f"u{n}", "h")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(a._places.renew, restore=True))
            await trio.testing.wait_all_tasks_blocked()  # the first pipeline is out
            await a.vacate("conns", "u1199", "h")
        assert [await b.occupy("conns", "u1199", h) for h in ("b1", "b2", "b3")] == [True] * 3


async def test_a_redis_that_lost_its_data_gets_the_places_back(
    redis_url: str, redis_prefix: str
) -> None:
    """Redis restarted empty: the places this process holds are written again."""
    async with opened(redis_url, redis_prefix, PLACES) as a, opened(
        redis_url, redis_prefix, PLACES
    ) as b:
        for holder in ("a1", "a2", "a3"):
            await a.occupy("conns", "alice", holder)
        async with redis_client(redis_url) as client:
            await client.delete(await keys_under(redis_url, redis_prefix))
        with trio.fail_after(5):
            while await b.occupy("conns", "alice", "b1"):  # the data is gone: b gets in...
                await b.vacate("conns", "alice", "b1")
                await trio.sleep(0.05)
        # ...until a has written its places again.
        assert not await b.occupy("conns", "alice", "b1")


# --- the scripts are the pure arithmetic ---------------------------------------------


async def test_every_script_compiles_on_redis(redis_url: str) -> None:
    """A Lua error would look like an outage at run time: every script loads."""
    from relay.bus import _redis as bus_redis
    from relay.limits import _lua

    sources = [getattr(_lua, name) for name in dir(_lua) if name.isupper()]
    sources += [bus_redis._REFRESH, bus_redis._WITHDRAW]
    async with redis_client(redis_url) as client:
        for source in sources:
            assert len(await client.script_load(source)) == 40


async def test_buckets_and_lockouts_answer_exactly_as_the_pure_code(
    redis_url: str, redis_prefix: str
) -> None:
    """Random takes and failures at random times: every answer equal, to the last bit."""
    import random

    from relay.limits import Lockout, LockoutPolicy, TokenBucket

    rate, lockout = RatePolicy(rate=1.7, burst=5.0), LockoutPolicy(3, window=4.0, duration=6.0)
    now = [1_800_000_000.123]
    rng = random.Random(20261130)
    odd = Policies(rates={"x": rate}, lockouts={"y": lockout})
    async with opened(redis_url, redis_prefix, odd, clock=lambda: now[0]) as limits:
        for sequence in range(40):
            bucket, failures = TokenBucket(rate, now[0]), Lockout(lockout)
            for _ in range(15):
                now[0] += rng.choice([0.0, rng.uniform(0, 3), rng.uniform(0, 0.01)])
                cost = rng.choice([1.0, rng.uniform(0, 5.0)])
                assert await limits.take("x", f"k{sequence}", cost) == bucket.take(now[0], cost)
                if rng.random() < 0.5:
                    got = await limits.record_failure("y", f"k{sequence}")
                    assert got == failures.record_failure(f"k{sequence}", now[0])
                locked = await limits.locked_for("y", f"k{sequence}")
                assert locked == failures.locked_for(f"k{sequence}", now[0])


async def test_a_script_redis_does_not_know_is_loaded_and_run(redis_url: str) -> None:
    """NOSCRIPT (a restarted Redis has no scripts) loads the script and runs the calls again."""
    import secrets

    from relay.limits._redis_batch import Script, ScriptBatcher
    from relay.resp import RedisAddress, RespClient

    unknown = Script(f"-- {secrets.token_hex(8)}\nreturn ARGV[1]")
    client = RespClient(RedisAddress.parse(redis_url), timeout=5)
    async with trio.open_nursery() as nursery:
        batcher = ScriptBatcher(client)
        nursery.start_soon(batcher.run)
        replies: list[str] = []

        async def call(n: int) -> None:
            replies.append(await batcher.call(unknown, "k", [str(n)]))

        async with trio.open_nursery() as calls:
            for n in range(5):
                calls.start_soon(call, n)
        assert sorted(replies) == ["0", "1", "2", "3", "4"]
        nursery.cancel_scope.cancel()
