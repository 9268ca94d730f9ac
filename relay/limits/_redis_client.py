"""The Redis client both shared adapters use, and the errors that mean "unreachable".

coredis is built on anyio, so it runs under Trio (ADR 0008). Commands time
out after :data:`TIMEOUT` and are retried once on a fresh connection (a
restarted Redis leaves dead connections in the pool); anything slower is
an outage to the caller, who then applies its unavailability policy.
"""

from __future__ import annotations

import coredis
import coredis.exceptions
from coredis.retry import ConstantRetryPolicy

from ..resp import ReplyError

TIMEOUT = 1.0
"""Seconds to connect, and to wait for a reply, before Redis counts as unreachable."""

UNREACHABLE: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,  # refused, reset, closed, still loading its data
    coredis.exceptions.ReadOnlyError,  # a replica during a failover
    TimeoutError,
    OSError,
)
"""Errors that mean Redis cannot be reached now (as opposed to a wrong command)."""

FAILED: tuple[type[BaseException], ...] = (
    coredis.exceptions.RedisError,
    ReplyError,  # from the hot path's own client (relay.resp)
    *UNREACHABLE,
)
"""Every error a Redis call can raise."""


def redis_client(url: str) -> coredis.Redis[str]:
    """A client for *url* (``redis://``, ``rediss://``, ``unix://``); use it as ``async with``.

    Opening it does not connect: connections are made on demand, so an
    unreachable Redis at start makes the first calls fail, not the start.
    """
    return coredis.Redis.from_url(
        url,
        decode_responses=True,
        connect_timeout=TIMEOUT,
        stream_timeout=TIMEOUT,
        retry_policy=ConstantRetryPolicy(UNREACHABLE, retries=1, delay=0.01),
    )
