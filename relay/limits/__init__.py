"""Limits port (rate limits, lockouts, known sources, revocations), its policies,
its in-memory adapter and its Redis adapter."""

from __future__ import annotations

from . import names as names
from ._bucket import KeyedBuckets as KeyedBuckets
from ._bucket import TokenBucket as TokenBucket
from ._known import KnownSources as KnownSources
from ._lockout import Lockout as Lockout
from ._memory import MemoryLimits as MemoryLimits
from ._memory import bounded_key as bounded_key
from ._policies import Policies as Policies
from ._policies import policies as policies
from ._port import Limits as Limits
from ._port import LockoutPolicy as LockoutPolicy
from ._port import PlacePolicy as PlacePolicy
from ._port import RatePolicy as RatePolicy
from ._port import Refusing as Refusing
from ._port import retry_after_header as retry_after_header
from ._redis import RedisLimits as RedisLimits
from ._redis import open_redis_limits as open_redis_limits
from ._redis_client import FAILED as REDIS_FAILED
from ._redis_client import TIMEOUT as REDIS_TIMEOUT
from ._redis_client import UNREACHABLE as REDIS_UNREACHABLE
from ._redis_client import redis_client as redis_client
from ._revocation import RevocationList as RevocationList
from ._unavailable import FAIL_MODES as FAIL_MODES
from ._unavailable import FailMode as FailMode
from ._unavailable import LimitsUnavailable as LimitsUnavailable

__all__ = [
    "FAIL_MODES",
    "REDIS_FAILED",
    "REDIS_TIMEOUT",
    "REDIS_UNREACHABLE",
    "FailMode",
    "KeyedBuckets",
    "KnownSources",
    "Limits",
    "LimitsUnavailable",
    "Lockout",
    "LockoutPolicy",
    "MemoryLimits",
    "PlacePolicy",
    "Policies",
    "RatePolicy",
    "RedisLimits",
    "Refusing",
    "RevocationList",
    "TokenBucket",
    "bounded_key",
    "names",
    "open_redis_limits",
    "policies",
    "redis_client",
    "retry_after_header",
]
