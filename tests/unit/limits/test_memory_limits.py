"""MemoryLimits on Trio's clock, driven by pytest-trio's autojump MockClock.

``autojump_clock`` is pytest-trio's built-in fixture,
``trio.testing.MockClock(autojump_threshold=0)``: requesting it runs the test
on virtual time that starts at 0 and jumps straight to the next deadline, so
every time below is exact.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.limits import Limits, LockoutPolicy, MemoryLimits, Policies, RatePolicy, bounded_key

MINUTE = 60.0
LOCKOUT = LockoutPolicy(threshold=5, window=15 * MINUTE, duration=15 * MINUTE)


def make_limits() -> MemoryLimits:
    return MemoryLimits(
        Policies(
            rates={"handshake": RatePolicy.per_minute(120), "login": RatePolicy.per_minute(60)},
            lockouts={"login": LOCKOUT},
        )
    )


async def fail(limits: Limits, key: str, times: int) -> list[float | None]:
    return [await limits.record_failure("login", key) for _ in range(times)]


def test_memory_limits_implements_the_limits_port() -> None:
    """MemoryLimits is a Limits (checked statically by mypy)."""
    limits: Limits = make_limits()
    assert limits is not None


# --- rate limits -------------------------------------------------------------


async def test_burst_of_120_then_the_121st_waits_half_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """per_minute(120): 120 immediate takes succeed, the 121st retries after 0.5 s."""
    limits = make_limits()
    assert [await limits.take("handshake", "ip") for _ in range(120)] == [None] * 120
    assert await limits.take("handshake", "ip") == 0.5
    assert trio.current_time() == 0.0


async def test_take_succeeds_after_sleeping_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sleeping the returned 0.5 s is enough for exactly one more take."""
    limits = make_limits()
    for _ in range(120):
        await limits.take("handshake", "ip")
    retry_after = await limits.take("handshake", "ip")
    assert retry_after is not None
    await trio.sleep(retry_after)
    assert trio.current_time() == 0.5
    assert await limits.take("handshake", "ip") is None
    assert await limits.take("handshake", "ip") == 0.5


async def test_ten_minutes_of_full_demand_grants_120_plus_2_per_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Taking whenever allowed for 600 s grants exactly 120 + 2 * 600."""
    limits = make_limits()
    granted = 0
    while trio.current_time() <= 10 * MINUTE:
        retry_after = await limits.take("handshake", "ip")
        if retry_after is None:
            granted += 1
        else:
            await trio.sleep(retry_after)
    assert granted == 120 + 2 * 600


async def test_refused_take_consumes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """Refusals while waiting do not push the next grant further away."""
    limits = make_limits()
    for _ in range(120):
        await limits.take("handshake", "ip")
    for _ in range(10):
        await limits.take("handshake", "ip")
    await trio.sleep(0.5)
    assert await limits.take("handshake", "ip") is None


async def test_cost_is_taken_in_tokens(autojump_clock: trio.testing.MockClock) -> None:
    """A take of cost 60 on per_minute(60) empties it; the next waits 1 s."""
    limits = make_limits()
    assert await limits.take("login", "ip", cost=60) is None
    assert await limits.take("login", "ip") == 1.0


async def test_limits_and_keys_have_separate_buckets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Draining (handshake, a) leaves (handshake, b) and (login, a) full."""
    limits = make_limits()
    await limits.take("handshake", "a", cost=120)
    assert await limits.take("handshake", "a") == 0.5
    assert await limits.take("handshake", "b", cost=120) is None
    assert await limits.take("login", "a", cost=60) is None


async def test_unknown_limit_raises_key_error(autojump_clock: trio.testing.MockClock) -> None:
    """A limit name with no policy is a KeyError naming it."""
    with pytest.raises(KeyError, match="nope"):
        await make_limits().take("nope", "ip")


def test_unusable_policy_fails_at_construction() -> None:
    """A zero rate is refused when MemoryLimits is built, not on first use."""
    with pytest.raises(ValueError, match="rate"):
        MemoryLimits(Policies(rates={"bad": RatePolicy(rate=0.0, burst=1.0)}))


async def test_injected_clock_is_used() -> None:
    """Times come from the clock given at construction."""
    now = [1_000.0]
    policies = Policies(rates={"x": RatePolicy(rate=1.0, burst=1.0)})
    limits = MemoryLimits(policies, clock=lambda: now[0])
    assert await limits.take("x", "k") is None
    assert await limits.take("x", "k") == 1.0
    now[0] += 1.0
    assert await limits.take("x", "k") is None


# --- lockouts ----------------------------------------------------------------


async def test_five_failures_in_15_minutes_lock_for_15_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The fifth failure within the window locks the key for the duration."""
    limits = make_limits()
    for _ in range(4):
        assert await limits.record_failure("login", "alice") is None
        await trio.sleep(3 * MINUTE)
    assert await limits.locked_for("login", "alice") is None
    assert await limits.record_failure("login", "alice") == 15 * MINUTE
    assert await limits.locked_for("login", "alice") == 15 * MINUTE


async def test_four_failures_plus_one_15_minutes_old_do_not_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failure exactly 15 minutes old has left the window."""
    limits = make_limits()
    await limits.record_failure("login", "alice")  # t = 0
    for _ in range(3):
        await trio.sleep(MINUTE)
        await limits.record_failure("login", "alice")  # t = 1, 2, 3 min
    await trio.sleep(12 * MINUTE)
    assert trio.current_time() == 15 * MINUTE
    assert await limits.record_failure("login", "alice") is None
    assert await limits.locked_for("login", "alice") is None


async def test_lock_expires_exactly_at_its_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Locked until 15 minutes after the locking failure, and not a moment more."""
    limits = make_limits()
    await fail(limits, "alice", 5)
    await trio.sleep(15 * MINUTE - 0.5)
    assert await limits.locked_for("login", "alice") == 0.5
    await trio.sleep(0.5)
    assert await limits.locked_for("login", "alice") is None


async def test_failures_while_locked_do_not_extend_the_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Failing during a lock returns None and the lock still ends on time."""
    limits = make_limits()
    await fail(limits, "alice", 5)
    await trio.sleep(10 * MINUTE)
    assert await fail(limits, "alice", 5) == [None] * 5
    assert await limits.locked_for("login", "alice") == 5 * MINUTE


async def test_clear_failures_resets_the_count(autojump_clock: trio.testing.MockClock) -> None:
    """After clear_failures, it takes five new failures to lock."""
    limits = make_limits()
    await fail(limits, "alice", 4)
    await limits.clear_failures("login", "alice")
    assert await fail(limits, "alice", 4) == [None] * 4
    assert await limits.record_failure("login", "alice") == 15 * MINUTE


async def test_clear_failures_does_not_lift_an_active_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A success racing a lock does not end the lock."""
    limits = make_limits()
    await fail(limits, "alice", 5)
    await limits.clear_failures("login", "alice")
    assert await limits.locked_for("login", "alice") == 15 * MINUTE


async def test_unknown_key_behaves_like_a_known_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fresh key and one whose history has expired lock on the same failure."""
    limits = make_limits()
    await fail(limits, "known", 5)
    await limits.clear_failures("login", "known")
    await trio.sleep(15 * MINUTE)
    await limits.clear_failures("login", "never-seen")
    for key in ("known", "never-seen"):
        assert await limits.locked_for("login", key) is None
        assert await fail(limits, key, 5) == [None] * 4 + [15 * MINUTE]


# --- revocation --------------------------------------------------------------


async def test_session_is_revoked_for_exactly_ttl(autojump_clock: trio.testing.MockClock) -> None:
    """Revoked for ttl seconds from the call, then no longer."""
    limits = make_limits()
    await limits.revoke("s1", 60.0)
    assert await limits.is_revoked("s1")
    await trio.sleep(59.5)
    assert await limits.is_revoked("s1")
    await trio.sleep(0.5)
    assert not await limits.is_revoked("s1")


async def test_unknown_session_is_not_revoked(autojump_clock: trio.testing.MockClock) -> None:
    """A session never revoked is not revoked."""
    assert not await make_limits().is_revoked("s1")


async def test_non_positive_ttl_revokes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """A ttl of zero or less leaves the session usable."""
    limits = make_limits()
    await limits.revoke("s1", 0.0)
    await limits.revoke("s2", -5.0)
    assert not await limits.is_revoked("s1")
    assert not await limits.is_revoked("s2")


async def test_shorter_revocation_does_not_shorten_a_longer_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Revoking again with a smaller ttl keeps the later end."""
    limits = make_limits()
    await limits.revoke("s1", 3600.0)
    await limits.revoke("s1", 1.0)
    await trio.sleep(60.0)
    assert await limits.is_revoked("s1")


def test_long_keys_are_stored_as_a_fixed_size_digest() -> None:
    """A key an outsider makes 4 KB long costs a 71-character digest, and stays distinct."""
    long_a, long_b = "a" * 4096, "a" * 4095 + "b"
    assert len(bounded_key(long_a)) == 71
    assert bounded_key(long_a) != bounded_key(long_b)
    assert bounded_key("10.0.0.1") == "10.0.0.1"
