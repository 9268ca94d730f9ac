"""A lean Redis client for the hot paths: RESP2 sans-I/O, and Trio streams at the edge.

The bus's publishes and subscription and the limits' script pipelines each
run in one task of their own, so each owns one connection: no pool, no
background tasks, one write and one read per round trip. Everything else
relay asks of Redis (scripts at start, streams, scans) goes through coredis
(ADR 0008, "The hot path's client").
"""

from __future__ import annotations

from ._address import RedisAddress as RedisAddress
from ._connection import RedisUnavailable as RedisUnavailable
from ._connection import RespClient as RespClient
from ._connection import Subscription as Subscription
from ._connection import open_subscription as open_subscription
from ._protocol import Arg as Arg
from ._protocol import ProtocolError as ProtocolError
from ._protocol import Reply as Reply
from ._protocol import ReplyError as ReplyError
from ._protocol import ReplyParser as ReplyParser
from ._protocol import encode as encode

__all__ = [
    "Arg",
    "ProtocolError",
    "RedisAddress",
    "RedisUnavailable",
    "Reply",
    "ReplyError",
    "ReplyParser",
    "RespClient",
    "Subscription",
    "encode",
    "open_subscription",
]
