"""Limits port (rate limits, lockouts, known sources, revocations), its policies
and its in-memory adapter."""

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
from ._port import RatePolicy as RatePolicy
from ._port import Refusing as Refusing
from ._port import retry_after_header as retry_after_header
from ._revocation import RevocationList as RevocationList

__all__ = [
    "KeyedBuckets",
    "KnownSources",
    "Limits",
    "Lockout",
    "LockoutPolicy",
    "MemoryLimits",
    "Policies",
    "RatePolicy",
    "Refusing",
    "RevocationList",
    "TokenBucket",
    "bounded_key",
    "names",
    "policies",
    "retry_after_header",
]
