"""Token buckets and keyed buckets: pure arithmetic at explicit times."""

from __future__ import annotations

import math

import pytest

from relay.limits import KeyedBuckets, RatePolicy, TokenBucket, retry_after_header

PER_MINUTE_120 = RatePolicy.per_minute(120)  # burst 120, then 2 per second


def drained(policy: RatePolicy = PER_MINUTE_120, now: float = 0.0) -> TokenBucket:
    bucket = TokenBucket(policy, now)
    assert bucket.take(now, policy.burst) is None
    return bucket


# --- TokenBucket -------------------------------------------------------------


def test_per_minute_means_n_over_60_per_second_with_burst_n() -> None:
    """per_minute(120) refills 2 tokens per second and saves at most 120."""
    assert RatePolicy.per_minute(120) == RatePolicy(rate=2.0, burst=120.0)


def test_new_bucket_starts_full() -> None:
    """A new bucket grants its whole burst at once."""
    bucket = TokenBucket(PER_MINUTE_120, 0.0)
    assert [bucket.take(0.0) for _ in range(120)] == [None] * 120


def test_take_beyond_burst_is_refused_with_seconds_until_refill() -> None:
    """The 121st take at once waits one token's refill: 0.5 s at 2/s."""
    bucket = drained()
    assert bucket.take(0.0) == 0.5


def test_refused_take_consumes_nothing() -> None:
    """Refusals leave the level alone, so the wait they report stays true."""
    bucket = drained()
    for _ in range(5):
        assert bucket.take(0.25) == 0.25
    assert bucket.take(0.5) is None


def test_sustained_rate_is_rate_per_second_not_one_per_second() -> None:
    """After the burst, per_minute(120) grants exactly 2 takes per second."""
    bucket = drained()
    assert [bucket.take(1.0) for _ in range(3)] == [None, None, 0.5]


def test_grants_over_ten_minutes_are_burst_plus_rate_times_elapsed() -> None:
    """Taking every 0.125 s for 600 s grants 120 + 2 * 600."""
    bucket = TokenBucket(PER_MINUTE_120, 0.0)
    granted = 0
    for tick in range(600 * 8 + 1):
        now = tick / 8
        while bucket.take(now) is None:
            granted += 1
    assert granted == 120 + 2 * 600


def test_refill_is_continuous() -> None:
    """A quarter second at 2/s refills half a token."""
    bucket = drained()
    assert bucket.take(0.25, 0.5) is None
    assert bucket.level(0.25) == 0.0


def test_refill_is_capped_at_burst() -> None:
    """An hour idle still saves only the burst."""
    bucket = drained()
    assert bucket.level(3600.0) == 120.0
    assert bucket.take(3600.0, 120) is None
    assert bucket.take(3600.0) == 0.5


def test_retry_after_covers_the_whole_cost() -> None:
    """With 1 token left, a cost of 3 waits for 2 more: 1 s at 2/s."""
    bucket = drained()
    assert bucket.take(0.5, 3) == 1.0


def test_zero_cost_is_always_granted() -> None:
    """A cost of 0 succeeds even on an empty bucket."""
    assert drained().take(0.0, 0) is None


@pytest.mark.parametrize("start", [0.0, 123_456.789, 1_800_000_000.0])
@pytest.mark.parametrize("per_minute", [1, 7, 100, 120, 1000, 6000, 1_000_000])
def test_taking_again_after_retry_after_always_succeeds(start: float, per_minute: int) -> None:
    """Float rounding of now + retry_after never causes a second refusal."""
    policy = RatePolicy.per_minute(per_minute)
    bucket = drained(policy, start)
    now = start
    for _ in range(500):
        retry_after = bucket.take(now)
        assert retry_after is not None and retry_after > 0
        now += retry_after
        assert bucket.take(now) is None


def test_earlier_now_mints_no_tokens() -> None:
    """A clock that steps backwards is treated as not having moved."""
    bucket = drained(now=100.0)
    assert bucket.take(50.0) == 0.5
    assert bucket.updated == 100.0
    assert bucket.take(100.5) is None


@pytest.mark.parametrize("cost", [-1.0, 120.5, math.nan])
def test_cost_outside_zero_to_burst_raises(cost: float) -> None:
    """A cost that could never be granted, or would mint tokens, is a ValueError."""
    with pytest.raises(ValueError, match="cost"):
        TokenBucket(PER_MINUTE_120, 0.0).take(0.0, cost)


@pytest.mark.parametrize(
    "policy",
    [
        RatePolicy(rate=0.0, burst=1.0),
        RatePolicy(rate=-1.0, burst=1.0),
        RatePolicy(rate=math.inf, burst=1.0),
        RatePolicy(rate=1.0, burst=0.0),
        RatePolicy(rate=1.0, burst=math.nan),
    ],
)
def test_unusable_policy_raises(policy: RatePolicy) -> None:
    """Rate and burst must be positive and finite."""
    with pytest.raises(ValueError, match="RatePolicy"):
        TokenBucket(policy, 0.0)
    with pytest.raises(ValueError, match="RatePolicy"):
        KeyedBuckets(policy)


# --- KeyedBuckets ------------------------------------------------------------


def test_keys_have_independent_buckets() -> None:
    """Draining one key leaves another full."""
    buckets = KeyedBuckets(PER_MINUTE_120)
    assert buckets.take("a", 0.0, 120) is None
    assert buckets.take("a", 0.0) == 0.5
    assert buckets.take("b", 0.0, 120) is None


def test_unknown_key_holds_no_state_until_taken() -> None:
    """A key is absent until its first take, then maps to its live bucket."""
    buckets = KeyedBuckets(PER_MINUTE_120)
    assert "a" not in buckets and len(buckets) == 0
    buckets.take("a", 0.0, 20)
    assert list(buckets) == ["a"]
    assert buckets["a"].tokens == 100.0


def test_never_holds_more_than_max_keys() -> None:
    """Any number of distinct keys is held in at most max_keys buckets."""
    buckets = KeyedBuckets(PER_MINUTE_120, max_keys=10)
    for i in range(1000):
        buckets.take(f"k{i}", i / 1000, 120)
        assert len(buckets) <= 10


def test_full_bucket_is_evicted_before_an_older_partial_one() -> None:
    """At capacity a refilled bucket goes first: it carries no information."""
    buckets = KeyedBuckets(PER_MINUTE_120, max_keys=3)
    buckets.take("oldest-empty", 0.0, 120)  # full again only at t=60
    buckets.take("refilled", 1.0, 1)  # full again at t=1.5
    buckets.take("empty", 2.0, 120)
    buckets.take("new", 3.0)
    assert set(buckets) == {"oldest-empty", "empty", "new"}


def test_oldest_updated_bucket_is_evicted_when_none_is_full() -> None:
    """With no full bucket, the one least recently taken from goes."""
    buckets = KeyedBuckets(PER_MINUTE_120, max_keys=3)
    for now, key in enumerate(["a", "b", "c"]):
        buckets.take(key, float(now), 120)
    buckets.take("a", 3.0)  # refused, but a take all the same
    buckets.take("new", 4.0)
    assert set(buckets) == {"a", "c", "new"}


def test_evicted_bucket_comes_back_full() -> None:
    """An evicted key's debt is forgiven: it behaves as a new key."""
    buckets = KeyedBuckets(PER_MINUTE_120, max_keys=1)
    buckets.take("a", 0.0, 120)
    buckets.take("b", 1.0, 120)
    assert buckets.take("a", 2.0, 120) is None


def test_failing_take_on_new_key_evicts_nothing() -> None:
    """A ValueError for a bad cost leaves the buckets as they were."""
    buckets = KeyedBuckets(PER_MINUTE_120, max_keys=1)
    buckets.take("a", 0.0, 120)
    with pytest.raises(ValueError):
        buckets.take("b", 1.0, 500)
    assert list(buckets) == ["a"]


def test_sweep_forgets_full_buckets_only() -> None:
    """sweep drops exactly the buckets refilled to burst at that time."""
    buckets = KeyedBuckets(PER_MINUTE_120)
    buckets.take("one-token", 0.0, 1)  # full at t=0.5
    buckets.take("empty", 0.0, 120)  # full at t=60
    assert buckets.sweep(0.5) == 1
    assert list(buckets) == ["empty"]
    assert buckets.sweep(60.0) == 1
    assert len(buckets) == 0


def test_max_keys_below_one_raises() -> None:
    """A KeyedBuckets must be able to hold at least one key."""
    with pytest.raises(ValueError, match="max_keys"):
        KeyedBuckets(PER_MINUTE_120, max_keys=0)


def test_wait_reports_without_taking() -> None:
    """wait() says how long until a token, and consumes nothing."""
    bucket = TokenBucket(RatePolicy.per_minute(60), now=0.0)
    for _ in range(60):
        assert bucket.wait(0.0) is None
        assert bucket.take(0.0) is None
    assert bucket.wait(0.0) == pytest.approx(1.0)
    assert bucket.wait(0.5) == pytest.approx(0.5)
    assert bucket.wait(1.0) is None
    assert bucket.take(1.0) is None


def test_keyed_wait_of_an_unknown_key_is_none() -> None:
    """A key never seen has a full bucket: no wait."""
    buckets = KeyedBuckets(RatePolicy.per_minute(1))
    assert buckets.wait("new", 0.0) is None
    buckets.take("new", 0.0)
    assert buckets.wait("new", 0.0) == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0.01, "1"), (1.0, "1"), (1.2, "2"), (20.000000000001, "20"), (899.5, "900")],
)
def test_retry_after_header_rounds_up_to_whole_seconds(wait: float, header: str) -> None:
    """Retry-After is the wait rounded up, at least 1, ignoring float noise."""
    assert retry_after_header(wait) == header
