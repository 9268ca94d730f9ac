"""Where the Redis Limits adapter keeps what: one key per bucket, lockout, set of
places, known set and revocation, all under one prefix. Pure: names in, names out.

Layout (``prefix`` is ``[limits] prefix``, ``relay:`` by default)::

    {prefix}tb:{limit}:{key}     token bucket        hash  t (tokens), u (updated)
    {prefix}lo:{lockout}:{key}   failure lockout     hash  l (locked at), f (failures)
    {prefix}pl:{limit}:{key}     places              zset  holder -> until (its lease)
    {prefix}ks:{key}             known sources       zset  member -> until
    {prefix}rv:{session}         revoked session     string  until
    {prefix}alive                written once; its absence means Redis lost its data

Limit and lockout names never contain ``:`` (see :mod:`relay.limits.names`),
so a key reads back unambiguously; *key* is whatever the caller passed,
already bounded (:func:`relay.limits.bounded_key`).
"""

from __future__ import annotations

import re

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def glob_escape(text: str) -> str:
    """*text* as a literal in a Redis ``MATCH`` pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class KeySpace:
    """The names of every key under *prefix*."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def bucket(self, limit: str, key: str) -> str:
        return f"{self.prefix}tb:{limit}:{key}"

    def lockout(self, lockout: str, key: str) -> str:
        return f"{self.prefix}lo:{lockout}:{key}"

    def places(self, limit: str, key: str) -> str:
        return f"{self.prefix}pl:{limit}:{key}"

    def known(self, key: str) -> str:
        return f"{self.prefix}ks:{key}"

    def revoked(self, session_id: str) -> str:
        return f"{self.prefix}rv:{session_id}"

    @property
    def alive(self) -> str:
        return f"{self.prefix}alive"

    def buckets_matching(self) -> str:
        """A ``SCAN MATCH`` pattern for every bucket."""
        return f"{glob_escape(self.prefix)}tb:*"

    def lockouts_matching(self, lockout: str | None = None, key_prefix: str = "") -> str:
        """A ``SCAN MATCH`` pattern for every lockout (of *lockout*, keys starting so)."""
        if lockout is None:
            return f"{glob_escape(self.prefix)}lo:*"
        return f"{glob_escape(self.prefix)}lo:{glob_escape(lockout)}:{glob_escape(key_prefix)}*"

    def parse(self, name: str) -> tuple[str, str] | None:
        """``(limit or lockout, key)`` of a bucket or lockout key; None for anything else."""
        for kind in ("tb:", "lo:"):
            head = self.prefix + kind
            if name.startswith(head):
                limit, sep, key = name[len(head) :].partition(":")
                return (limit, key) if sep else None
        return None
