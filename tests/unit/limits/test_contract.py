"""The Limits contract: what every adapter answers (see ``relay/limits/_port.py``).

Each test takes ``limits`` (a fresh adapter on ``POLICIES``) and ``clock``
(the time it reads, moved by the test), and so runs once per adapter in
``conftest.py``: in memory, and on Redis. Identical answers at identical
times are the point: N relay processes on Redis must behave as one.
"""

from __future__ import annotations

import pytest

from relay.limits import Limits, LockoutPolicy, PlacePolicy, Policies, RatePolicy

from .conftest import MINUTE, FakeClock, Opener


async def fail(limits: Limits, key: str, times: int, lockout: str = "login") -> list[float | None]:
    return [await limits.record_failure(lockout, key) for _ in range(times)]


# --- token buckets -----------------------------------------------------------


async def test_burst_of_120_then_the_121st_waits_half_a_second(limits: Limits) -> None:
    """per_minute(120): 120 immediate takes succeed, the 121st retries after 0.5 s."""
    assert [await limits.take("handshake", "ip") for _ in range(120)] == [None] * 120
    assert await limits.take("handshake", "ip") == 0.5


async def test_take_succeeds_after_waiting_retry_after(limits: Limits, clock: FakeClock) -> None:
    """Waiting exactly the returned seconds is enough for exactly one more take."""
    await limits.take("handshake", "ip", cost=120)
    retry_after = await limits.take("handshake", "ip")
    assert retry_after is not None
    clock.advance(retry_after)
    assert await limits.take("handshake", "ip") is None
    assert await limits.take("handshake", "ip") == 0.5


async def test_a_minute_of_full_demand_grants_120_plus_2_per_second(
    limits: Limits, clock: FakeClock
) -> None:
    """Taking whenever allowed for 60 s grants exactly 120 + 2 * 60."""
    start, granted = clock.now, 0
    while clock.now - start <= MINUTE:
        retry_after = await limits.take("handshake", "ip")
        if retry_after is None:
            granted += 1
        else:
            clock.advance(retry_after)
    assert granted == 120 + 2 * 60


async def test_a_refused_take_consumes_nothing(limits: Limits, clock: FakeClock) -> None:
    """Refusals while waiting do not push the next grant further away."""
    await limits.take("handshake", "ip", cost=120)
    for _ in range(10):
        assert await limits.take("handshake", "ip") is not None
    clock.advance(0.5)
    assert await limits.take("handshake", "ip") is None


async def test_cost_is_taken_in_tokens(limits: Limits) -> None:
    """A take of cost 60 on per_minute(60) empties it; the next waits 1 s."""
    assert await limits.take("login", "ip", cost=60) is None
    assert await limits.take("login", "ip") == 1.0


async def test_a_refusal_says_when_the_whole_cost_is_there(
    limits: Limits, clock: FakeClock
) -> None:
    """With 10 tokens back, a take of 30 waits for the 20 missing (20 s at 1 a second)."""
    await limits.take("login", "ip", cost=60)
    clock.advance(10)
    assert await limits.take("login", "ip", cost=30) == 20.0


async def test_limits_and_keys_have_separate_buckets(limits: Limits) -> None:
    """Draining (handshake, a) leaves (handshake, b) and (login, a) full."""
    await limits.take("handshake", "a", cost=120)
    assert await limits.take("handshake", "a") == 0.5
    assert await limits.take("handshake", "b", cost=120) is None
    assert await limits.take("login", "a", cost=60) is None


async def test_a_bucket_refills_to_its_burst_and_no_more(
    limits: Limits, clock: FakeClock
) -> None:
    """An hour after draining, the bucket holds its burst of 120, not 7,200."""
    await limits.take("handshake", "ip", cost=120)
    clock.advance(3600)
    assert await limits.take("handshake", "ip", cost=120) is None
    assert await limits.take("handshake", "ip") == 0.5


async def test_an_unknown_limit_is_a_key_error(limits: Limits) -> None:
    """A limit name with no policy is a KeyError naming it, for take and blocked_for."""
    with pytest.raises(KeyError, match="nope"):
        await limits.take("nope", "ip")
    with pytest.raises(KeyError, match="nope"):
        limits.blocked_for("nope", "ip")


async def test_a_cost_above_the_burst_is_a_value_error(limits: Limits) -> None:
    """A take that could never be granted (or would mint tokens) is refused as an error."""
    with pytest.raises(ValueError, match="cost"):
        await limits.take("login", "ip", cost=61)
    with pytest.raises(ValueError, match="cost"):
        await limits.take("login", "ip", cost=-1)


async def test_blocked_for_says_how_long_a_drained_bucket_stays_empty(
    limits: Limits, clock: FakeClock
) -> None:
    """After this process drained a bucket, blocked_for answers without a round trip."""
    assert limits.blocked_for("handshake", "ip") is None
    await limits.take("handshake", "ip", cost=120)
    assert limits.blocked_for("handshake", "ip") == pytest.approx(0.5)
    clock.advance(0.2)
    assert limits.blocked_for("handshake", "ip") == pytest.approx(0.3)
    clock.advance(0.3)
    assert limits.blocked_for("handshake", "ip") is None
    assert limits.blocked_for("handshake", "other") is None


# --- lockouts ----------------------------------------------------------------


async def test_five_failures_in_15_minutes_lock_for_15_minutes(
    limits: Limits, clock: FakeClock
) -> None:
    """The fifth failure within the window locks the key for the duration."""
    for _ in range(4):
        assert await limits.record_failure("login", "alice") is None
        clock.advance(3 * MINUTE)
    assert await limits.locked_for("login", "alice") is None
    assert await limits.record_failure("login", "alice") == 15 * MINUTE
    assert await limits.locked_for("login", "alice") == 15 * MINUTE


async def test_a_failure_15_minutes_old_has_left_the_window(
    limits: Limits, clock: FakeClock
) -> None:
    """Four failures plus one exactly 15 minutes old do not lock (a rolling window)."""
    await limits.record_failure("login", "alice")
    for _ in range(3):
        clock.advance(MINUTE)
        await limits.record_failure("login", "alice")
    clock.advance(12 * MINUTE)
    assert await limits.record_failure("login", "alice") is None
    assert await limits.locked_for("login", "alice") is None
    assert await limits.record_failure("login", "alice") == 15 * MINUTE


async def test_a_lock_ends_exactly_at_its_duration(limits: Limits, clock: FakeClock) -> None:
    """Locked until 15 minutes after the locking failure, and not a moment more."""
    await fail(limits, "alice", 5)
    clock.advance(15 * MINUTE - 0.5)
    assert await limits.locked_for("login", "alice") == pytest.approx(0.5)
    clock.advance(0.5)
    assert await limits.locked_for("login", "alice") is None


async def test_failures_while_locked_neither_extend_nor_count(
    limits: Limits, clock: FakeClock
) -> None:
    """Failing during a lock returns None, the lock ends on time, and counting starts afresh."""
    await fail(limits, "alice", 5)
    clock.advance(10 * MINUTE)
    assert await fail(limits, "alice", 5) == [None] * 5
    assert await limits.locked_for("login", "alice") == pytest.approx(5 * MINUTE)
    clock.advance(5 * MINUTE)
    assert await fail(limits, "alice", 5) == [None] * 4 + [15 * MINUTE]


async def test_clear_failures_resets_the_count(limits: Limits) -> None:
    """After clear_failures, it takes five new failures to lock."""
    await fail(limits, "alice", 4)
    await limits.clear_failures("login", "alice")
    assert await fail(limits, "alice", 4) == [None] * 4
    assert await limits.record_failure("login", "alice") == 15 * MINUTE


async def test_clear_failures_does_not_lift_an_active_lock(limits: Limits) -> None:
    """A success racing a lock does not end the lock."""
    await fail(limits, "alice", 5)
    await limits.clear_failures("login", "alice")
    assert await limits.locked_for("login", "alice") == 15 * MINUTE


async def test_an_unknown_key_behaves_like_an_expired_one(
    limits: Limits, clock: FakeClock
) -> None:
    """A fresh key and one whose lock has ended lock on the same failure."""
    await fail(limits, "known", 5)
    clock.advance(15 * MINUTE)
    for key in ("known", "never-seen"):
        assert await limits.locked_for("login", key) is None
        assert await fail(limits, key, 5) == [None] * 4 + [15 * MINUTE]


async def test_lockouts_are_separate_per_name_and_key(limits: Limits) -> None:
    """Locking (login, alice) leaves (login, bob) and (guard, alice) unlocked."""
    await fail(limits, "alice", 5)
    assert await limits.locked_for("login", "bob") is None
    assert await limits.locked_for("guard", "alice") is None
    assert await fail(limits, "alice", 2, lockout="guard") == [None, 30.0]


async def test_unlock_lifts_the_lock_and_forgets_the_failures(limits: Limits) -> None:
    """unlock ends a lock at once; True if the key held anything, False otherwise."""
    await fail(limits, "alice", 5)
    assert await limits.unlock("login", "alice") is True
    assert await limits.locked_for("login", "alice") is None
    await fail(limits, "alice", 3)
    assert await limits.unlock("login", "alice") is True
    assert await fail(limits, "alice", 4) == [None] * 4
    assert await limits.unlock("login", "nobody") is False


async def test_unlock_prefix_lifts_every_lock_under_the_prefix(limits: Limits) -> None:
    """Every "alice|…" pair is unlocked and counted; "alicia|…" and other lockouts stay."""
    for key in ("alice|10.0.0.1", "alice|10.0.0.2", "alicia|10.0.0.1"):
        await fail(limits, key, 5)
    await fail(limits, "alice|10.0.0.1", 2, lockout="guard")
    assert await limits.unlock_prefix("login", "alice|") == 2
    assert await limits.locked_for("login", "alice|10.0.0.1") is None
    assert await limits.locked_for("login", "alicia|10.0.0.1") == 15 * MINUTE
    assert await limits.locked_for("guard", "alice|10.0.0.1") == 30.0


async def test_unlock_prefix_takes_the_prefix_literally(limits: Limits) -> None:
    """Characters that mean something in a pattern (*, ?, [) match only themselves."""
    await fail(limits, "a*|1", 5)
    await fail(limits, "ab|1", 5)
    assert await limits.unlock_prefix("login", "a*") == 1
    assert await limits.locked_for("login", "ab|1") == 15 * MINUTE


# --- places --------------------------------------------------------------------


async def test_a_key_has_cap_places_and_the_next_holder_is_refused(limits: Limits) -> None:
    """PlacePolicy(cap=3): three holders get a place, the fourth does not."""
    assert [await limits.occupy("conns", "alice", h) for h in ("a", "b", "c", "d")] == [
        True,
        True,
        True,
        False,
    ]


async def test_a_vacated_place_can_be_taken_again(limits: Limits) -> None:
    """Giving one place back lets exactly one more holder in."""
    for holder in ("a", "b", "c"):
        await limits.occupy("conns", "alice", holder)
    await limits.vacate("conns", "alice", "b")
    assert await limits.occupy("conns", "alice", "d")
    assert not await limits.occupy("conns", "alice", "e")


async def test_a_holder_occupying_again_takes_no_second_place(limits: Limits) -> None:
    """Occupy is idempotent per holder: asking twice still leaves room for two others."""
    assert await limits.occupy("conns", "alice", "a")
    assert await limits.occupy("conns", "alice", "a")
    assert await limits.occupy("conns", "alice", "b")
    assert await limits.occupy("conns", "alice", "c")
    assert not await limits.occupy("conns", "alice", "d")


async def test_vacating_a_place_never_held_changes_nothing(limits: Limits) -> None:
    """A stray vacate (a refused or never-made occupy) frees no one else's place."""
    for holder in ("a", "b", "c"):
        await limits.occupy("conns", "alice", holder)
    await limits.vacate("conns", "alice", "stranger")
    await limits.vacate("conns", "bob", "a")
    assert not await limits.occupy("conns", "alice", "d")


async def test_places_of_different_keys_are_counted_apart(limits: Limits) -> None:
    """Alice at her cap leaves Bob all of his places."""
    for holder in ("a", "b", "c"):
        await limits.occupy("conns", "alice", holder)
    assert [await limits.occupy("conns", "bob", h) for h in ("a", "b", "c")] == [True] * 3


async def test_a_place_limit_with_no_policy_is_a_key_error(limits: Limits) -> None:
    """occupy and vacate name the unknown limit."""
    with pytest.raises(KeyError, match="nope"):
        await limits.occupy("nope", "alice", "a")
    with pytest.raises(KeyError, match="nope"):
        await limits.vacate("nope", "alice", "a")


# --- known sources -----------------------------------------------------------


async def test_a_remembered_member_is_known_until_its_ttl(
    limits: Limits, clock: FakeClock
) -> None:
    """Known for ttl seconds, then not; never known under another key."""
    await limits.remember("known:alice", "10.0.0.1", 60)
    assert await limits.knows("known:alice", "10.0.0.1")
    assert not await limits.knows("known:bob", "10.0.0.1")
    assert not await limits.knows("known:alice", "10.0.0.2")
    clock.advance(59.5)
    assert await limits.knows("known:alice", "10.0.0.1")
    clock.advance(0.5)
    assert not await limits.knows("known:alice", "10.0.0.1")


async def test_remembering_again_extends(limits: Limits, clock: FakeClock) -> None:
    """A member remembered again is known for the new ttl from then."""
    await limits.remember("known:alice", "10.0.0.1", 60)
    clock.advance(50)
    await limits.remember("known:alice", "10.0.0.1", 60)
    clock.advance(50)
    assert await limits.knows("known:alice", "10.0.0.1")


async def test_at_most_eight_members_are_known_per_key(limits: Limits, clock: FakeClock) -> None:
    """A ninth member pushes out the one remembered longest ago."""
    for n in range(9):
        await limits.remember("known:alice", f"10.0.0.{n}", 3600)
        clock.advance(1)
    assert not await limits.knows("known:alice", "10.0.0.0")
    for n in range(1, 9):
        assert await limits.knows("known:alice", f"10.0.0.{n}")


# --- revocations -------------------------------------------------------------


async def test_a_session_is_revoked_for_exactly_its_ttl(limits: Limits, clock: FakeClock) -> None:
    """Revoked for ttl seconds from the call, then no longer."""
    await limits.revoke("s1", 60.0)
    assert await limits.is_revoked("s1")
    clock.advance(59.5)
    assert await limits.is_revoked("s1")
    clock.advance(0.5)
    assert not await limits.is_revoked("s1")


async def test_a_session_never_revoked_is_not(limits: Limits) -> None:
    """A session never revoked is not revoked."""
    assert not await limits.is_revoked("s1")


async def test_a_non_positive_ttl_revokes_nothing(limits: Limits) -> None:
    """A ttl of zero or less leaves the session usable."""
    await limits.revoke("s1", 0.0)
    await limits.revoke("s2", -5.0)
    assert not await limits.is_revoked("s1")
    assert not await limits.is_revoked("s2")


async def test_a_shorter_revocation_never_shortens_a_longer_one(
    limits: Limits, clock: FakeClock
) -> None:
    """Revoking again with a smaller ttl keeps the later end; a longer one extends it."""
    await limits.revoke("s1", 3600.0)
    await limits.revoke("s1", 1.0)
    clock.advance(60.0)
    assert await limits.is_revoked("s1")
    await limits.revoke("s1", 7200.0)
    clock.advance(3600.0)
    assert await limits.is_revoked("s1")


# --- the operator's view and bounded keys ------------------------------------


async def test_refusing_lists_empty_buckets_and_locked_keys_longest_first(
    limits: Limits,
) -> None:
    """What refuses now, with its seconds, longest first, at most *limit* of them."""
    await limits.take("handshake", "10.0.0.1", cost=120)
    await limits.take("login", "10.0.0.2", cost=60)
    await limits.take("login", "10.0.0.3", cost=1)  # not empty: not refusing
    await fail(limits, "alice|10.0.0.1", 5)
    refusing = await limits.refusing(10)
    assert [(r.limit, r.key) for r in refusing] == [
        ("login", "alice|10.0.0.1"),
        ("login", "10.0.0.2"),
        ("handshake", "10.0.0.1"),
    ]
    assert [r.seconds for r in refusing] == pytest.approx([15 * MINUTE, 1.0, 0.5])
    assert len(await limits.refusing(2)) == 2


async def test_long_keys_are_bounded_and_stay_distinct(limits: Limits) -> None:
    """Two 4 KB keys differing in their last character are two buckets."""
    long_a, long_b = "a" * 4096, "a" * 4095 + "b"
    await limits.take("login", long_a, cost=60)
    assert await limits.take("login", long_a) == 1.0
    assert await limits.take("login", long_b) is None
    await limits.revoke(long_a, 60)
    assert await limits.is_revoked(long_a)
    assert not await limits.is_revoked(long_b)


async def test_an_unusable_policy_fails_when_the_adapter_is_built(
    open_limits: Opener, clock: FakeClock
) -> None:
    """A zero rate or threshold is refused at start, not on first use."""
    for policies in (
        Policies(rates={"bad": RatePolicy(rate=0.0, burst=1.0)}),
        Policies(lockouts={"bad": LockoutPolicy(threshold=0, window=1, duration=1)}),
        Policies(places={"bad": PlacePolicy(cap=0)}),
    ):
        with pytest.raises(ValueError, match=r"rate|threshold|cap"):
            async with open_limits(policies, clock):
                pass
