"""Advisory lock keys of the PostgreSQL store. Pure."""

from __future__ import annotations

import hashlib


def advisory_key(purpose: str, schema: str) -> int:
    """A 64-bit key for ``pg_advisory_xact_lock``, the same in every process.

    Advisory locks are database-wide; the schema is part of the key so that
    two relays kept in two schemas of one database never wait for each
    other. (Python's ``hash`` differs per process; a digest does not.)
    """
    digest = hashlib.blake2b(f"relay:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
