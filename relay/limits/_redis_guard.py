"""Whether Redis is reachable, as this process last saw it, and what a call does if not.

The first call that cannot reach Redis marks it *down*; from then on calls
do not wait for it (no connection attempt, no timeout) but answer at once by
their limit's policy (:mod:`relay.limits._unavailable`), until the adapter's
watcher reaches Redis again and marks it *up*. Each answer given without
Redis is a security event, logged at most once per limit every 10 s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from ..obs import Logger, LogSampler
from ._redis_client import FAILED, UNREACHABLE
from ._unavailable import FAIL_MODES, FailMode, LimitsUnavailable, fail_mode

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """The error's class and words, for a log line.

    Neither coredis nor relay.resp puts the URL or a password in an error:
    host:port at most, and of a refused login only the error's kind.
    """
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class RedisGuard:
    """Runs calls on Redis, or by the unavailability policy when it is down."""

    def __init__(
        self,
        log: Logger,
        clock: Callable[[], float],
        modes: Mapping[str, FailMode] = FAIL_MODES,
    ) -> None:
        self._log = log
        self._clock = clock
        self._modes = modes
        self._sampler = LogSampler(clock)
        self.up = True
        self._down_since = 0.0

    def went_down(self, exc: BaseException) -> None:
        """Redis could not be reached: answer without it until :meth:`came_back`."""
        if self.up:
            self.up = False
            self._down_since = self._clock()
            self._log.error("limits.redis_unreachable", error=describe(exc))

    def came_back(self) -> float | None:
        """Redis answered: use it again. How long it was down (None if it was up)."""
        if self.up:
            return None
        self.up = True
        return self._clock() - self._down_since

    async def either(
        self,
        name: str,
        shared: Callable[[], Awaitable[T]],
        alone: Callable[[], Awaitable[T]],
        *,
        mode: FailMode | None = None,
    ) -> T:
        """*shared* (on Redis); if Redis fails or is down, by the policy of limit *name*
        (or *mode*): *alone* (this process on its own) or :class:`LimitsUnavailable`.

        An error reply (not an outage) is logged and answered by policy for
        this call only. Cancellation propagates as it is.
        """
        if self.up:
            try:
                return await shared()
            except UNREACHABLE as exc:
                self.went_down(exc)
            except FAILED as exc:  # an error reply: answered by policy, this call only
                self._sampled("limits.redis_error", name, error=describe(exc))
        mode = mode or fail_mode(name, self._modes)
        self._sampled("limits.redis_unavailable", name, mode=mode.value)
        if mode is FailMode.CLOSED:
            raise LimitsUnavailable(name)
        return await alone()

    def _sampled(self, event: str, name: str, **fields: object) -> None:
        """Log *event* for limit *name* at most once every 10 s, with how many were not."""
        suppressed = self._sampler.admit(event, name, self._clock())
        if suppressed is not None:
            self._log.warning(event, limit=name, suppressed=suppressed, **fields)
