"""The Limits contract runs once per adapter, on a clock the test moves.

``limits`` is a fresh adapter of each kind in ``ADAPTERS``: the in-memory
one, and the Redis one on a key prefix of the test's own (skipped, saying
why, without a Redis). Both read the same :class:`FakeClock`, so every time
in the contract is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from relay.limits import (
    Limits,
    LockoutPolicy,
    MemoryLimits,
    PlacePolicy,
    Policies,
    RatePolicy,
    open_redis_limits,
)
from relay.obs import get_logger

MINUTE = 60.0
LOCKOUT = LockoutPolicy(threshold=5, window=15 * MINUTE, duration=15 * MINUTE)
POLICIES = Policies(
    rates={"handshake": RatePolicy.per_minute(120), "login": RatePolicy.per_minute(60)},
    lockouts={"login": LOCKOUT, "guard": LockoutPolicy(threshold=2, window=60, duration=30)},
    places={"conns": PlacePolicy(cap=3)},
)


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Opener = Callable[[Policies, FakeClock], AbstractAsyncContextManager[Limits]]


@asynccontextmanager
async def _memory(policies: Policies, clock: FakeClock) -> AsyncIterator[Limits]:
    yield MemoryLimits(policies, clock=clock)


def _redis(request: pytest.FixtureRequest) -> Opener:
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")

    @asynccontextmanager
    async def opened(policies: Policies, clock: FakeClock) -> AsyncIterator[Limits]:
        async with open_redis_limits(
            url, policies, prefix=prefix, log=get_logger("test"), clock=clock, local_clock=clock
        ) as limits:
            yield limits

    return opened


ADAPTERS: dict[str, Callable[[pytest.FixtureRequest], Opener]] = {
    "memory": lambda request: _memory,
    "redis": _redis,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(ADAPTERS))
def open_limits(request: pytest.FixtureRequest) -> Opener:
    """Opens an adapter of each kind (as a context manager) on the given policies and clock."""
    return ADAPTERS[request.param](request)


@pytest.fixture
async def limits(open_limits: Opener, clock: FakeClock) -> AsyncIterator[Limits]:
    """An adapter of each kind on :data:`POLICIES`, reading *clock*."""
    async with open_limits(POLICIES, clock) as opened:
        yield opened
