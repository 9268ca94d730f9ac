"""Properties of token-bucket arithmetic, over any rates, times and costs."""

from __future__ import annotations

import copy
import math

from hypothesis import given
from hypothesis import strategies as st

from relay.limits import KeyedBuckets, RatePolicy, TokenBucket

# Rates from one a day to ten thousand a second; clocks from zero to a Unix time.
policies = st.builds(
    RatePolicy,
    rate=st.floats(1 / 86_400, 10_000),
    burst=st.floats(1, 10_000) | st.integers(1, 1_000).map(float),
)
starts = st.floats(0, 4e9) | st.sampled_from([0.0, 1_800_000_000.0])
gaps = st.floats(0, 1_000) | st.sampled_from([0.0, 1e-9, 0.5, 1.0, 60.0])
fractions = st.floats(0, 1)


@st.composite
def histories(
    draw: st.DrawFn, max_size: int = 60
) -> tuple[RatePolicy, float, list[tuple[float, float]]]:
    """A policy, a start time and takes as (gap since the previous one, cost)."""
    policy = draw(policies)
    costs = fractions.map(lambda f: f * policy.burst) | st.sampled_from([1.0, policy.burst, 0.0])
    takes = draw(st.lists(st.tuples(gaps, costs), max_size=max_size))
    return policy, draw(starts), takes


def allowance(policy: RatePolicy, now: float) -> float:
    """The shortfall a take may be forgiven at *now*: below the clock's resolution."""
    return max(1e-9, 4 * math.ulp(now)) * policy.rate


@given(histories())
def test_tokens_stay_between_zero_and_burst(
    history: tuple[RatePolicy, float, list[tuple[float, float]]],
) -> None:
    """Whatever is taken and whenever, the level never leaves [0, burst]."""
    policy, now, takes = history
    bucket = TokenBucket(policy, now)
    for gap, cost in takes:
        now += gap
        bucket.take(now, cost)
        assert 0 <= bucket.tokens <= policy.burst
        assert 0 <= bucket.level(now) <= policy.burst


@given(histories())
def test_a_refused_take_consumes_nothing(
    history: tuple[RatePolicy, float, list[tuple[float, float]]],
) -> None:
    """A refusal leaves the level exactly where it was."""
    policy, now, takes = history
    bucket = TokenBucket(policy, now)
    for gap, cost in takes:
        now += gap
        before = bucket.level(now)
        if bucket.take(now, cost) is not None:
            assert bucket.level(now) == before


@given(histories())
def test_taking_again_after_retry_after_succeeds(
    history: tuple[RatePolicy, float, list[tuple[float, float]]],
) -> None:
    """A refusal's retry_after is positive and enough: the same take then succeeds."""
    policy, now, takes = history
    bucket = TokenBucket(policy, now)
    for gap, cost in takes:
        now += gap
        wait = bucket.take(now, cost)
        if wait is not None:
            assert wait > 0
            assert bucket.wait(now, cost) == wait
            retried = copy.copy(bucket)
            assert retried.take(now + wait, cost) is None


@given(histories(max_size=120))
def test_takes_over_an_interval_are_bounded_by_burst_plus_rate(
    history: tuple[RatePolicy, float, list[tuple[float, float]]],
) -> None:
    """Over any T seconds from a full bucket, at most burst + rate * T is granted."""
    policy, now, takes = history
    bucket = TokenBucket(policy, now)
    granted = forgiven = 0.0  # running totals since the start
    full_at: list[tuple[float, float, float]] = []  # (time, granted, forgiven) when full
    for gap, cost in takes:
        now += gap
        if bucket.is_full(now):
            full_at.append((now, granted, forgiven))
        if bucket.take(now, cost) is None:
            granted += cost
            forgiven += allowance(policy, now)
        for start, granted_then, forgiven_then in full_at:
            bound = policy.burst + policy.rate * (now - start) + (forgiven - forgiven_then)
            assert granted - granted_then <= bound


# --- KeyedBuckets ------------------------------------------------------------------

keys = st.sampled_from("abcdefghij")


@given(
    policies,
    st.integers(1, 6),
    starts,
    st.lists(st.tuples(keys, gaps, st.floats(0, 1)), max_size=80),
)
def test_keyed_buckets_never_hold_more_than_max_keys(
    policy: RatePolicy, max_keys: int, now: float, takes: list[tuple[str, float, float]]
) -> None:
    """However many keys arrive, at most max_keys buckets are held."""
    buckets = KeyedBuckets(policy, max_keys)
    for key, gap, fraction in takes:
        now += gap
        buckets.take(key, now, fraction * policy.burst)
        assert len(buckets) <= max_keys
        assert len(set(buckets)) == len(buckets)


@given(policies, starts, st.lists(st.tuples(keys, gaps, st.floats(0, 1)), max_size=80))
def test_keyed_buckets_with_room_behave_as_one_bucket_per_key(
    policy: RatePolicy, now: float, takes: list[tuple[str, float, float]]
) -> None:
    """Below max_keys each key answers exactly as its own TokenBucket would."""
    buckets = KeyedBuckets(policy, max_keys=100)
    alone: dict[str, TokenBucket] = {}
    for key, gap, fraction in takes:
        now += gap
        cost = fraction * policy.burst
        expected = alone.setdefault(key, TokenBucket(policy, now)).take(now, cost)
        assert buckets.take(key, now, cost) == expected


@given(policies, st.integers(1, 6), starts, st.lists(st.tuples(keys, gaps), max_size=80))
def test_an_unknown_or_forgotten_key_is_a_full_bucket(
    policy: RatePolicy, max_keys: int, now: float, takes: list[tuple[str, float]]
) -> None:
    """A key not held (never seen, evicted or swept) can take a whole burst."""
    buckets = KeyedBuckets(policy, max_keys)
    for key, gap in takes:
        now += gap
        buckets.take(key, now, policy.burst)
        buckets.sweep(now)
        for other in "abcdefghij":
            if other not in buckets:
                assert buckets.wait(other, now, policy.burst) is None
