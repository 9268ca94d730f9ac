"""Limits port (rate limits, lockouts, revocations) and its in-memory adapter."""

from __future__ import annotations

from ._bucket import KeyedBuckets as KeyedBuckets
from ._bucket import TokenBucket as TokenBucket
from ._lockout import Lockout as Lockout
from ._memory import MemoryLimits as MemoryLimits
from ._port import Limits as Limits
from ._port import LockoutPolicy as LockoutPolicy
from ._port import RatePolicy as RatePolicy
from ._port import retry_after_header as retry_after_header
from ._revocation import RevocationList as RevocationList
