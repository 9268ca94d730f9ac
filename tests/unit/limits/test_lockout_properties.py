"""Lockout and RevocationList against reference models, driven by hypothesis state machines."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.limits import Lockout, LockoutPolicy, RevocationList

KEYS = "abcdefgh"
keys = st.sampled_from(KEYS)
# Whole and half seconds: exact in floating point, so the model's plain
# comparisons and the implementation's arithmetic cannot disagree by rounding.
gaps = st.integers(0, 40).map(float) | st.just(0.5)


@dataclass
class KeyModel:
    """What the lockout should know of one key: its counted failures and its lock."""

    failures: list[float] = field(default_factory=list)
    locked_at: float | None = None


class LockoutModel:
    """The rules of docs/security.md, written as plainly as possible."""

    def __init__(self, policy: LockoutPolicy) -> None:
        self.policy = policy
        self.keys: dict[str, KeyModel] = {}

    def locked_for(self, key: str, now: float) -> float | None:
        state = self.keys.get(key)
        if state is None or state.locked_at is None:
            return None
        end = state.locked_at + self.policy.duration
        return end - now if now < end else None

    def record_failure(self, key: str, now: float) -> float | None:
        if self.locked_for(key, now) is not None:
            return None  # ignored: a lock is never extended
        state = self.keys.setdefault(key, KeyModel())
        state.locked_at = None
        state.failures = [t for t in state.failures if now - t < self.policy.window] + [now]
        if len(state.failures) < self.policy.threshold:
            return None
        state.failures, state.locked_at = [], now
        return self.policy.duration

    def clear(self, key: str) -> None:
        if key in self.keys:
            self.keys[key].failures = []

    def live(self, key: str, now: float) -> bool:
        """True if forgetting *key* would change an answer."""
        state = self.keys.get(key)
        if state is None:
            return False
        recent = [t for t in state.failures if now - t < self.policy.window]
        return bool(recent) or self.locked_for(key, now) is not None


class LockoutMachine(RuleBasedStateMachine):
    """Random failures, checks, clears and sweeps; every answer matches the model."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    @initialize(
        threshold=st.integers(1, 5),
        window=st.integers(1, 30),
        duration=st.integers(1, 30),
        max_keys=st.integers(1, 6),
    )
    def start(self, threshold: int, window: int, duration: int, max_keys: int) -> None:
        self.policy = LockoutPolicy(threshold, float(window), float(duration))
        self.max_keys = max_keys
        self.lockout = Lockout(self.policy, max_keys)
        self.model = LockoutModel(self.policy)

    def held(self) -> set[str]:
        return {key for key in KEYS if key in self.lockout}

    def live(self) -> set[str]:
        return {key for key in KEYS if self.model.live(key, self.now)}

    @rule(gap=gaps)
    def time_passes(self, gap: float) -> None:
        self.now += gap

    @rule(key=keys)
    def failure(self, key: str) -> None:
        held, live = self.held(), self.live()
        arriving_at_capacity = key not in held and len(held) >= self.max_keys
        was_locked = self.model.locked_for(key, self.now) is not None
        expected = self.model.record_failure(key, self.now)
        event("ignored while locked" if was_locked else "locked" if expected else "counted")
        assert self.lockout.record_failure(key, self.now) == expected
        if expected is not None:
            assert expected == self.policy.duration
            assert self.lockout.locked_for(key, self.now) == self.policy.duration
        # Making room may forget one key that still mattered, and only then.
        evicted = (live & held) - self.held() - {key}
        assert len(evicted) <= (1 if arriving_at_capacity else 0)
        for gone in evicted:
            event("a live key evicted")
            del self.model.keys[gone]

    @rule(key=keys)
    def check(self, key: str) -> None:
        live = self.live()
        remaining = self.lockout.locked_for(key, self.now)
        assert remaining == self.model.locked_for(key, self.now)
        assert remaining is None or 0 < remaining <= self.policy.duration
        assert live <= self.held()  # a lazy drop forgets only what no longer matters

    @rule(key=keys)
    def success(self, key: str) -> None:
        self.lockout.clear(key)
        self.model.clear(key)
        assert self.live() <= self.held()

    @rule(key=keys)
    def operator_unlocks(self, key: str) -> None:
        had_state = key in self.lockout
        assert self.lockout.unlock(key) == had_state
        self.model.keys.pop(key, None)
        assert key not in self.lockout
        assert self.lockout.locked_for(key, self.now) is None

    @rule()
    def sweep(self) -> None:
        self.lockout.sweep(self.now)
        assert self.held() == self.live()

    @precondition(lambda self: hasattr(self, "lockout"))
    @invariant()
    def memory_is_bounded(self) -> None:
        assert len(self.lockout) <= self.max_keys


TestLockoutMatchesItsModel = LockoutMachine.TestCase
TestLockoutMatchesItsModel.__doc__ = (
    "Locks at exactly threshold failures in the window, for exactly duration."
)


class RevocationMachine(RuleBasedStateMachine):
    """Random revocations, checks and sweeps; every answer matches a dict of deadlines."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.revocations = RevocationList()
        self.until: dict[str, float] = {}

    @rule(gap=gaps)
    def time_passes(self, gap: float) -> None:
        self.now += gap

    @rule(session=keys, ttl=gaps)
    def revoke(self, session: str, ttl: float) -> None:
        self.revocations.revoke(session, self.now + ttl)
        self.until[session] = max(self.until.get(session, self.now), self.now + ttl)

    @rule(session=keys)
    def check(self, session: str) -> None:
        expected = self.now < self.until.get(session, self.now)
        assert self.revocations.is_revoked(session, self.now) == expected

    @rule()
    def sweep(self) -> None:
        self.revocations.sweep(self.now)
        assert len(self.revocations) == sum(self.now < until for until in self.until.values())

    @invariant()
    def holds_no_more_than_it_was_given(self) -> None:
        assert len(self.revocations) <= len(self.until)


TestRevocationListMatchesItsModel = RevocationMachine.TestCase
TestRevocationListMatchesItsModel.__doc__ = (
    "A revocation holds until its deadline, never shortened."
)
