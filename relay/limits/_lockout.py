"""Failure lockouts: pure arithmetic, no clock and no I/O."""

from __future__ import annotations

import math
from collections import OrderedDict

from ._port import LockoutPolicy


class _KeyState:
    """One key's recent failures (ascending) and the start of its lock, if any."""

    __slots__ = ("failures", "locked_at")

    def __init__(self) -> None:
        # Never more than threshold - 1 entries between calls: reaching the
        # threshold locks the key and clears them.
        self.failures: list[float] = []
        self.locked_at: float | None = None


class Lockout:
    """Per key: *threshold* failures within a rolling *window* lock it for *duration*.

    Times are seconds on a monotonic clock, passed in as *now*; calls must pass
    a non-decreasing *now*.

    - A failure counts while it is less than ``window`` seconds old: at
      exactly ``window`` seconds it is dropped.
    - The failure that brings the count to *threshold* locks the key for
      *duration* seconds from that failure, and the count restarts from zero;
      the lock ends at exactly *duration* seconds.
    - While locked, further failures are ignored: they neither extend the
      lock nor count toward the next one. So no lock outlasts *duration*,
      whatever anyone sends while it holds. This limits the denial of service
      against a victim's key only partially (an attacker can still send
      *threshold* failures each time a lock ends), but every lock has a
      predictable end that the victim can be told.
    - :meth:`clear` forgets failures but does not lift an active lock.
    - A key never seen behaves exactly like one whose history has expired.

    Memory is bounded by *max_keys*: when a new key arrives at capacity, stale
    keys (no lock, no failure inside the window) are dropped first (invisibly);
    failing that, the key whose last failure is oldest is dropped, which
    forgets its failures or lock. The scan for stale keys runs on at most one
    arrival in every ``max(1, max_keys // 8)`` at capacity (the others drop the
    oldest key, normally a stale one anyway), so the cost is amortised O(1).
    """

    __slots__ = ("_max_keys", "_policy", "_scan_every", "_since_scan", "_states")

    def __init__(self, policy: LockoutPolicy, max_keys: int = 100_000) -> None:
        if policy.threshold < 1:
            raise ValueError(f"LockoutPolicy.threshold must be >= 1, got {policy.threshold!r}")
        for name in ("window", "duration"):
            value = getattr(policy, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"LockoutPolicy.{name} must be finite and > 0, got {value!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._policy = policy
        self._max_keys = max_keys
        # Ordered by last failure (move_to_end), so the oldest is first and
        # evicting it is O(1).
        self._states: OrderedDict[str, _KeyState] = OrderedDict()
        self._scan_every = max(1, max_keys // 8)
        self._since_scan = self._scan_every  # the first arrival at capacity scans

    @property
    def policy(self) -> LockoutPolicy:
        return self._policy

    def __len__(self) -> int:
        """The number of keys holding state (failures or a lock)."""
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def held_keys(self) -> list[str]:
        """The keys holding state now (failures or a lock)."""
        return list(self._states)

    def locked_for(self, key: str, now: float) -> float | None:
        """Seconds (> 0) until *key*'s lock ends, or None if it is not locked at *now*."""
        state = self._states.get(key)
        if state is None:
            return None
        remaining = self._remaining(state, now)
        if remaining is None and self._is_stale(state, now):
            del self._states[key]  # lazily forget what no longer matters
        return remaining

    def record_failure(self, key: str, now: float) -> float | None:
        """Count a failure of *key* at *now*.

        Returns the lock's seconds (``policy.duration``) if this failure
        locked the key, else None, including when the key was already
        locked (the failure is then ignored).
        """
        state = self._states.get(key)
        if state is None:
            state = _KeyState()
            if len(self._states) >= self._max_keys:
                self._make_room(now)
            self._states[key] = state
        else:
            self._states.move_to_end(key)
            if self._remaining(state, now) is not None:
                return None
        state.locked_at = None
        self._prune(state, now)
        state.failures.append(now)
        if len(state.failures) >= self._policy.threshold:
            state.failures.clear()
            state.locked_at = now
            return self._policy.duration
        return None

    def unlock_prefix(self, prefix: str) -> int:
        """:meth:`unlock` every key starting with *prefix*; how many had state."""
        keys = [key for key in self._states if key.startswith(prefix)]
        for key in keys:
            del self._states[key]
        return len(keys)

    def unlock(self, key: str) -> bool:
        """Forget *key*'s failures and lift its lock (an operator's call); True if it had state."""
        return self._states.pop(key, None) is not None

    def clear(self, key: str) -> None:
        """Forget *key*'s failures (after a success); an active lock stays."""
        state = self._states.get(key)
        # A state with a lock (even an expired one) has no failures: locking
        # clears them and failures while locked are ignored. Keep it for the lock.
        if state is not None and state.locked_at is None:
            del self._states[key]

    def sweep(self, now: float) -> int:
        """Forget every key that is stale at *now*; return how many."""
        stale = [key for key, state in self._states.items() if self._is_stale(state, now)]
        for key in stale:
            del self._states[key]
        return len(stale)

    def _remaining(self, state: _KeyState, now: float) -> float | None:
        if state.locked_at is None:
            return None
        # From the elapsed time rather than a stored end, so that the answer
        # at the locking instant is exactly ``duration``.
        remaining = self._policy.duration - (now - state.locked_at)
        return remaining if remaining > 0 else None

    def _prune(self, state: _KeyState, now: float) -> None:
        failures = state.failures
        window = self._policy.window
        drop = 0
        while drop < len(failures) and now - failures[drop] >= window:
            drop += 1
        if drop:
            del failures[:drop]

    def _is_stale(self, state: _KeyState, now: float) -> bool:
        if self._remaining(state, now) is not None:
            return False
        # Failures are ascending, so the newest decides.
        return not state.failures or now - state.failures[-1] >= self._policy.window

    def _make_room(self, now: float) -> None:
        if self._since_scan >= self._scan_every:
            self._since_scan = 0
            self.sweep(now)
        self._since_scan += 1
        if len(self._states) >= self._max_keys:
            self._states.popitem(last=False)
