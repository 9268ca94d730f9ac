"""What a configuration opens, in words for an operator, never with a secret.

``SQLite file /srv/relay/relay.db``, ``PostgreSQL relay@db1:5432/relay``,
``Redis 10.0.0.5:6379/0``: the command line prints these (the banner of
``relay serve``, ``relay user``, ``relay migrate``); passwords in DSNs and
URLs are left out, as the logs leave them out.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..config import Config
from ..store import describe_dsn


def describe_store(config: Config) -> str:
    """The store, e.g. ``SQLite file /srv/relay/relay.db`` or ``PostgreSQL u@h:5432/db``."""
    if config.store.backend == "postgres":
        return f"PostgreSQL {describe_dsn(config.store.dsn)}"
    return f"SQLite file {Path(config.store.path).resolve()}"


def describe_bus(config: Config) -> str:
    """The bus: in-process, or the Redis it publishes on."""
    if config.bus.backend == "redis":
        return f"Redis {describe_redis_url(config.bus.url)} (shared by the relay processes)"
    return "in-process (this process only)"


def describe_limits(config: Config) -> str:
    """Where the rate limits and lockouts are counted."""
    if config.limits.backend == "redis":
        return f"Redis {describe_redis_url(config.limits.url)} (shared by the relay processes)"
    return "in memory (this process only)"


def describe_redis_url(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL, without user or password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        db = parts.path.strip("/") or "0"
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        tls = " (TLS)" if parts.scheme == "rediss" else ""
        return f"{host}:{parts.port or 6379}/{db}{tls}"
    except ValueError:  # a port out of range, say: config checks the scheme only
        return "(an unreadable URL)"


def describe_store_problem(config: Config, detail: str) -> str:
    """*detail* (a store's words) prefixed with the store it is about, unless it names it."""
    where = describe_store(config)
    named = where.split(" ", 1)[1] if config.store.backend == "postgres" else where
    return detail if named in detail else f"{where}: {detail}"
