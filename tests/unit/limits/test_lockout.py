"""Lockouts: failures in a rolling window, at explicit times."""

from __future__ import annotations

import math

import pytest

from relay.limits import Lockout, LockoutPolicy

MINUTE = 60.0
# 5 failures within 15 minutes lock for 15 minutes.
POLICY = LockoutPolicy(threshold=5, window=15 * MINUTE, duration=15 * MINUTE)


def fail(lockout: Lockout, key: str, *times: float) -> list[float | None]:
    return [lockout.record_failure(key, now) for now in times]


def locked_at(now: float, key: str = "alice") -> Lockout:
    """A lockout whose *key* was locked by its fifth failure at *now*."""
    lockout = Lockout(POLICY)
    assert fail(lockout, key, *[now] * 5)[-1] == 15 * MINUTE
    return lockout


def held(lockout: Lockout, *keys: str) -> set[str]:
    return {key for key in keys if key in lockout}


def test_threshold_failures_within_window_lock_for_duration() -> None:
    """The fifth failure inside 15 minutes locks the key for 15 minutes."""
    lockout = Lockout(POLICY)
    assert fail(lockout, "alice", 0.0, 60.0, 120.0, 180.0) == [None] * 4
    assert lockout.locked_for("alice", 180.0) is None
    assert lockout.record_failure("alice", 240.0) == 15 * MINUTE
    assert lockout.locked_for("alice", 240.0) == 15 * MINUTE


def test_lock_runs_from_the_locking_failure() -> None:
    """Time left is the duration minus the time since the fifth failure."""
    lockout = locked_at(100.0)
    assert lockout.locked_for("alice", 400.0) == 15 * MINUTE - 300.0


def test_failure_exactly_window_old_is_dropped() -> None:
    """Four recent failures plus one exactly 15 minutes old do not lock."""
    lockout = Lockout(POLICY)
    fail(lockout, "alice", 0.0, 60.0, 120.0, 180.0)
    assert lockout.record_failure("alice", 15 * MINUTE) is None
    assert lockout.locked_for("alice", 15 * MINUTE) is None


def test_failure_just_inside_window_still_counts() -> None:
    """A failure younger than 15 minutes still counts toward the lock."""
    lockout = Lockout(POLICY)
    fail(lockout, "alice", 0.0, 60.0, 120.0, 180.0)
    assert lockout.record_failure("alice", 15 * MINUTE - 0.5) == 15 * MINUTE


def test_lock_expires_exactly_at_duration() -> None:
    """Locked half a second before the duration ends, unlocked at its end."""
    lockout = locked_at(0.0)
    assert lockout.locked_for("alice", 15 * MINUTE - 0.5) == 0.5
    assert lockout.locked_for("alice", 15 * MINUTE) is None


def test_failures_while_locked_do_not_extend_the_lock() -> None:
    """Failing again during a lock returns None and leaves its end alone."""
    lockout = locked_at(0.0)
    assert fail(lockout, "alice", *[600.0] * 10) == [None] * 10
    assert lockout.locked_for("alice", 600.0) == 300.0
    assert lockout.locked_for("alice", 15 * MINUTE) is None


def test_failures_while_locked_do_not_count_toward_the_next_lock() -> None:
    """After a lock ends, a full threshold of fresh failures is needed again."""
    lockout = locked_at(0.0)
    fail(lockout, "alice", *[600.0] * 10)
    end = 15 * MINUTE
    assert fail(lockout, "alice", end, end, end, end) == [None] * 4
    assert lockout.record_failure("alice", end) == 15 * MINUTE


def test_failures_that_locked_do_not_count_again_after_expiry() -> None:
    """The count restarts from zero when a key is locked."""
    lockout = locked_at(0.0)
    assert lockout.record_failure("alice", 15 * MINUTE) is None
    assert lockout.locked_for("alice", 15 * MINUTE) is None


def test_clear_forgets_failures() -> None:
    """After clear, four earlier failures no longer count."""
    lockout = Lockout(POLICY)
    fail(lockout, "alice", 0.0, 1.0, 2.0, 3.0)
    lockout.clear("alice")
    assert fail(lockout, "alice", 4.0, 5.0, 6.0, 7.0) == [None] * 4
    assert lockout.record_failure("alice", 8.0) == 15 * MINUTE


def test_clear_does_not_lift_an_active_lock() -> None:
    """A success reported during a lock does not end it early."""
    lockout = locked_at(0.0)
    lockout.clear("alice")
    assert lockout.locked_for("alice", 1.0) == 15 * MINUTE - 1.0


def test_unknown_key_is_unlocked_and_clear_on_it_is_harmless() -> None:
    """A key never seen is not locked, and clearing it holds no state."""
    lockout = Lockout(POLICY)
    assert lockout.locked_for("nobody", 0.0) is None
    lockout.clear("nobody")
    assert len(lockout) == 0


def test_expired_key_behaves_like_a_new_one() -> None:
    """A key whose lock and failures have expired needs a full threshold again."""
    seen = locked_at(0.0)
    fail(seen, "alice", 15 * MINUTE)
    later = 31 * MINUTE
    fresh = Lockout(POLICY)
    times = [later + i for i in range(5)]
    assert fail(seen, "alice", *times) == fail(fresh, "alice", *times)


def test_keys_are_independent() -> None:
    """Locking one key leaves another unlocked and uncounted."""
    lockout = locked_at(0.0, key="alice")
    assert lockout.locked_for("bob", 0.0) is None
    assert fail(lockout, "bob", 1.0, 2.0, 3.0, 4.0) == [None] * 4


def test_threshold_of_one_locks_on_the_first_failure() -> None:
    """With threshold 1, any failure locks."""
    lockout = Lockout(LockoutPolicy(threshold=1, window=60.0, duration=30.0))
    assert lockout.record_failure("alice", 0.0) == 30.0


def test_expired_state_is_forgotten_lazily() -> None:
    """Asking about an expired lock drops the key's state."""
    lockout = locked_at(0.0)
    assert len(lockout) == 1
    lockout.locked_for("alice", 15 * MINUTE)
    assert "alice" not in lockout


def test_sweep_forgets_stale_keys_only() -> None:
    """sweep keeps locked keys and keys with failures inside the window."""
    lockout = Lockout(POLICY)
    fail(lockout, "old", 0.0)
    fail(lockout, "locked", *[5 * MINUTE] * 5)  # locked until 20 min
    fail(lockout, "recent", 10 * MINUTE)
    assert lockout.sweep(15 * MINUTE) == 1
    assert held(lockout, "old", "locked", "recent") == {"locked", "recent"}
    assert lockout.sweep(25 * MINUTE) == 2
    assert len(lockout) == 0


def test_never_holds_more_than_max_keys() -> None:
    """Failures for any number of keys are held for at most max_keys keys."""
    lockout = Lockout(POLICY, max_keys=10)
    for i in range(1000):
        lockout.record_failure(f"k{i}", i / 1000)
        assert len(lockout) <= 10


def test_stale_key_is_evicted_before_an_older_live_one() -> None:
    """At capacity a key with nothing left to remember goes before older ones."""
    long_lock = LockoutPolicy(threshold=2, window=15 * MINUTE, duration=60 * MINUTE)
    lockout = Lockout(long_lock, max_keys=3)
    fail(lockout, "oldest-locked", 0.0, 0.0)  # locked until 60 min
    fail(lockout, "stale", 1.0)  # out of the window from 15 min + 1 s
    fail(lockout, "live", 16 * MINUTE)
    fail(lockout, "new", 17 * MINUTE)
    assert held(lockout, "oldest-locked", "stale", "live", "new") == {
        "oldest-locked",
        "live",
        "new",
    }


def test_oldest_key_is_evicted_when_none_is_stale() -> None:
    """With no stale key, the one whose last failure is oldest goes."""
    lockout = Lockout(POLICY, max_keys=3)
    fail(lockout, "a", 0.0)
    fail(lockout, "b", 1.0)
    fail(lockout, "c", 2.0)
    fail(lockout, "a", 3.0)
    lockout.record_failure("new", 4.0)
    assert held(lockout, "a", "b", "c", "new") == {"a", "c", "new"}


@pytest.mark.parametrize(
    "policy",
    [
        LockoutPolicy(threshold=0, window=60.0, duration=60.0),
        LockoutPolicy(threshold=5, window=0.0, duration=60.0),
        LockoutPolicy(threshold=5, window=60.0, duration=-1.0),
        LockoutPolicy(threshold=5, window=math.inf, duration=60.0),
    ],
)
def test_unusable_policy_raises(policy: LockoutPolicy) -> None:
    """Threshold must be at least 1; window and duration positive and finite."""
    with pytest.raises(ValueError, match="LockoutPolicy"):
        Lockout(policy)
