"""What each limit does while the shared limits store (Redis) is unreachable.

A shared adapter cannot enforce a cross-process limit without its store, so
each limit either **fails open** — this process enforces it alone, on its own
in-memory bucket (N processes then allow up to N times the limit, never
unlimited) — or **fails closed**: the request is refused with
:class:`LimitsUnavailable` (HTTP 503 ``limits_unavailable``, with
``Retry-After``). docs/security.md has the table and the reasons; in short:
logging in and creating accounts fail closed (the brute-force surface, and a
process restarted meanwhile would start with no failure counts), everything
a connected client does fails open (an outage of Redis must not disconnect
every user).

Pure data: the adapter reads :func:`fail_mode`; tests read the table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ..errors import Unavailable
from .names import (
    CONNECTIONS_USER,
    GUARDED_LOGIN,
    HANDSHAKE,
    HANDSHAKE_USER,
    KEYS_FETCH,
    KEYS_FETCH_USER,
    KEYS_TARGET,
    LOGIN,
    LOGIN_FAILURES,
    LOGIN_FAILURES_USER,
    REGISTER,
    SEND,
    SEND_USER,
)

RETRY_AFTER = 5.0
"""Seconds a client refused for an unreachable limits store is told to wait."""


class FailMode(enum.Enum):
    OPEN = "open"  # enforce it in this process alone
    CLOSED = "closed"  # refuse: LimitsUnavailable


FAIL_MODES: Mapping[str, FailMode] = {
    # Logging in and signing up: refuse rather than let guesses go uncounted.
    LOGIN: FailMode.CLOSED,
    REGISTER: FailMode.CLOSED,
    GUARDED_LOGIN: FailMode.CLOSED,
    LOGIN_FAILURES: FailMode.CLOSED,
    LOGIN_FAILURES_USER: FailMode.CLOSED,
    # Connected clients: keep serving, each process holding the line alone.
    HANDSHAKE: FailMode.OPEN,
    HANDSHAKE_USER: FailMode.OPEN,
    CONNECTIONS_USER: FailMode.OPEN,
    SEND: FailMode.OPEN,
    SEND_USER: FailMode.OPEN,
    KEYS_FETCH: FailMode.OPEN,
    KEYS_FETCH_USER: FailMode.OPEN,
    KEYS_TARGET: FailMode.OPEN,
}
"""Every limit and lockout relay defines, and its mode."""


def fail_mode(name: str, modes: Mapping[str, FailMode] = FAIL_MODES) -> FailMode:
    """The mode of limit or lockout *name*; a name not in *modes* fails closed."""
    return modes.get(name, FailMode.CLOSED)


class LimitsUnavailable(Unavailable):
    """A limit that fails closed could not be checked: refuse, and retry shortly."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "limits_unavailable",
            "this cannot be checked right now; retry shortly",
            retry_after=RETRY_AFTER,
        )
        self.detail = detail  # the client library's words, for the log only
