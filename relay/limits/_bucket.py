"""Token buckets: pure arithmetic, no clock and no I/O.

The caller passes *now* (seconds on any monotonic clock) to every call, so the
same code serves the in-memory adapter, tests with literal times and any
future adapter that keeps the two numbers of state somewhere else.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping

from ._port import RatePolicy

# A shortfall that the clock cannot even represent is rounding, not demand:
# after a refusal the caller sleeps exactly the returned seconds, but
# ``now + retry_after`` is rounded to the clock's float resolution (about
# 2.4e-7 s for Unix timestamps), which may land a hair short of the refill.
# Without this tolerance such a caller would be refused again with a
# retry_after of ~1e-7 s. The floor covers a clock that starts near zero.
_MIN_TOLERANCE = 1e-9
_TOLERANCE_ULPS = 4


def _check_policy(policy: RatePolicy) -> None:
    # ``not x > 0`` rather than ``x <= 0`` so that NaN is refused too.
    if not (policy.rate > 0 and math.isfinite(policy.rate)):
        raise ValueError(f"RatePolicy.rate must be finite and > 0, got {policy.rate!r}")
    if not (policy.burst > 0 and math.isfinite(policy.burst)):
        raise ValueError(f"RatePolicy.burst must be finite and > 0, got {policy.burst!r}")


class TokenBucket:
    """One bucket: ``policy.rate`` tokens per second, continuously, at most ``policy.burst``.

    A new bucket starts full. The whole state is :attr:`tokens` (the level at
    :attr:`updated`) and :attr:`updated` (the *now* it was last brought up to
    date). Calls must pass a non-decreasing *now*; an earlier one is treated
    as :attr:`updated` (time never runs backwards for a bucket, so a clock
    glitch can neither mint nor destroy tokens).

    The sustained rate is exactly ``policy.rate`` per second: with
    ``RatePolicy.per_minute(120)`` a burst of 120 is granted, then one take
    every 0.5 s.
    """

    __slots__ = ("policy", "tokens", "updated")

    policy: RatePolicy
    tokens: float
    updated: float

    def __init__(self, policy: RatePolicy, now: float) -> None:
        _check_policy(policy)
        self.policy = policy
        self.tokens = policy.burst
        self.updated = now

    def level(self, now: float) -> float:
        """The tokens available at *now* (between 0 and burst); changes nothing."""
        elapsed = now - self.updated
        if elapsed <= 0:
            return self.tokens
        return min(self.policy.burst, self.tokens + elapsed * self.policy.rate)

    def is_full(self, now: float) -> bool:
        """True if the bucket has refilled to burst by *now*.

        A full bucket is indistinguishable from a new one, so it may be
        forgotten without changing any future answer.
        """
        return self.level(now) >= self.policy.burst

    def wait(self, now: float, cost: float = 1.0) -> float | None:
        """Seconds until *cost* tokens are available, None if they are now; changes nothing."""
        shortfall = cost - self.level(now)
        tolerance = max(_MIN_TOLERANCE, _TOLERANCE_ULPS * math.ulp(now)) * self.policy.rate
        return None if shortfall <= tolerance else shortfall / self.policy.rate

    def take(self, now: float, cost: float = 1.0) -> float | None:
        """Take *cost* tokens at *now*.

        Returns None if they were available (and consumes them); otherwise
        consumes nothing and returns the seconds (> 0) until they will be,
        if nothing else is taken meanwhile. Taking again at
        ``now + retry_after`` is guaranteed to succeed in that case, despite
        float rounding.

        Raises ValueError unless ``0 <= cost <= burst``: a larger cost could
        never be granted, and a negative one would mint tokens.
        """
        policy = self.policy
        if not 0 <= cost <= policy.burst:
            raise ValueError(f"cost must be between 0 and burst ({policy.burst}), got {cost!r}")
        # Materialise the refill up to now. Doing it on a refusal too changes
        # no future answer, and keeps ``updated`` equal to the last call, which
        # KeyedBuckets relies on to evict the least recently used bucket.
        if now > self.updated:
            self.tokens = min(policy.burst, self.tokens + (now - self.updated) * policy.rate)
            self.updated = now
        shortfall = cost - self.tokens
        tolerance = max(_MIN_TOLERANCE, _TOLERANCE_ULPS * math.ulp(now)) * policy.rate
        if shortfall <= tolerance:
            # Any forgiven shortfall is below the clock's resolution.
            self.tokens = max(0.0, self.tokens - cost)
            return None
        return shortfall / policy.rate

    def __repr__(self) -> str:
        return f"TokenBucket({self.policy!r}, tokens={self.tokens!r}, updated={self.updated!r})"


class KeyedBuckets(Mapping[str, TokenBucket]):
    """Buckets by key, all with one policy, holding at most *max_keys* of them.

    Reading it as a mapping gives the live buckets that exist (a key never
    taken from, or forgotten, is absent and behaves as a full bucket).

    Memory is bounded: when a new key arrives and *max_keys* buckets exist,
    buckets that have refilled to full are dropped first (they carry no
    information, so this is invisible); if none is full, the least recently
    updated bucket is dropped, which forgives its debt. To keep a flood of
    new keys from costing a full scan each, the scan for full buckets runs on
    at most one arrival in every ``max(1, max_keys // 8)`` at capacity; the
    arrivals in between drop the least recently updated bucket, which is
    normally a full one anyway. The cost per take is amortised O(1).
    """

    __slots__ = ("_buckets", "_max_keys", "_policy", "_scan_every", "_since_scan")

    def __init__(self, policy: RatePolicy, max_keys: int = 100_000) -> None:
        _check_policy(policy)
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._policy = policy
        self._max_keys = max_keys
        # Ordered by last take: move_to_end on every take keeps the least
        # recently updated bucket first, so evicting it is O(1). (A plain dict
        # used as a queue degrades: deleted slots pile up at its front.)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._scan_every = max(1, max_keys // 8)
        self._since_scan = self._scan_every  # the first arrival at capacity scans

    @property
    def policy(self) -> RatePolicy:
        return self._policy

    @property
    def max_keys(self) -> int:
        return self._max_keys

    def take(self, key: str, now: float, cost: float = 1.0) -> float | None:
        """:meth:`TokenBucket.take` on *key*'s bucket, creating it (full) if absent."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._policy, now)
            # Check the cost before evicting anything for a take that raises.
            result = bucket.take(now, cost)
            if len(self._buckets) >= self._max_keys:
                self._make_room(now)
            self._buckets[key] = bucket
            return result
        self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def wait(self, key: str, now: float, cost: float = 1.0) -> float | None:
        """:meth:`TokenBucket.wait` on *key*'s bucket (None for an unknown key: full)."""
        bucket = self._buckets.get(key)
        return None if bucket is None else bucket.wait(now, cost)

    def sweep(self, now: float) -> int:
        """Forget every bucket that is full at *now*; return how many."""
        # TokenBucket.is_full inlined: this loop is the hot part of a flood of
        # new keys. A bucket updated after *now* counts as not full, which is
        # merely conservative.
        rate, burst = self._policy.rate, self._policy.burst
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]
        return len(full)

    def _make_room(self, now: float) -> None:
        if self._since_scan >= self._scan_every:
            self._since_scan = 0
            self.sweep(now)
        self._since_scan += 1
        if len(self._buckets) >= self._max_keys:
            self._buckets.popitem(last=False)

    def __getitem__(self, key: str) -> TokenBucket:
        return self._buckets[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._buckets)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets
