"""One connection's life as a state machine: sans-I/O, one clock, exact times.

Times are seconds on one monotonic clock, passed in (``now``); the token's
wall-clock expiry is converted to it once, when the connection is admitted
or refreshed. :class:`ConnectionLife` decides; the I/O layer
(``_connection.py``) and the shared timer (``_heartbeats.py``) act on its
answers. Its rules:

- **Heartbeat.** Every ``interval`` seconds without a ping outstanding, the
  connection is pinged; if no pong comes within ``timeout``, and no frame at
  all arrived since the ping, and our own reader was not the one waiting
  (on a full pipeline), the peer is too slow to read: close 1013.
  (trio-websocket answers pings only while its reader runs, so a client
  that stops reading goes quiet.)
- **Expiry.** At the token's expiry the connection closes 4001, unless a
  ``refresh`` moved it later first.
- **Bad frames.** ``bad_frame_limit`` refusals in a row close it with 1008;
  one is forgiven every ``60 / limit`` seconds, so a rare mistake never adds up.
- **Closing** is decided once: the first close wins, later ones change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..limits import RatePolicy, TokenBucket


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code and reason."""

    code: int
    reason: str


class _Ping:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


PING: Final = _Ping()
"""Send a ping now (and expect its pong within the timeout)."""

Action = Close | _Ping | None

TOO_SLOW = Close(1013, "too slow to read its messages")
HEARTBEAT_TIMEOUT = Close(1013, "heartbeat timeout")
EXPIRED = Close(4001, "token expired")
POLICY = Close(1008, "too many invalid frames")
PEER_GONE = Close(1006, "connection lost")


@dataclass(frozen=True, slots=True)
class LifePolicy:
    heartbeat_interval: float
    heartbeat_timeout: float
    bad_frame_limit: int


class ConnectionLife:
    """The decisions of one connection's life; see the module doc."""

    __slots__ = (
        "_bad_frames",
        "_inbound",
        "_inbound_at_ping",
        "_next_ping",
        "_policy",
        "_pong_due",
        "_ponged",
        "closed",
        "expires_at",
        "reader_waiting",
    )

    def __init__(self, policy: LifePolicy, now: float, expires_at: float) -> None:
        self._policy = policy
        self.expires_at = expires_at
        self.closed: Close | None = None
        self.reader_waiting = False  # blocked on our pipeline, not on the peer
        self._next_ping = now + policy.heartbeat_interval
        self._pong_due: float | None = None  # set while a ping is outstanding
        self._ponged = False
        self._inbound = 0
        self._inbound_at_ping = 0
        self._bad_frames = TokenBucket(RatePolicy.per_minute(policy.bad_frame_limit), now)

    def deadline(self) -> float:
        """When :meth:`on_timer` must next be called (the earliest timer)."""
        beat = self._pong_due if self._pong_due is not None else self._next_ping
        return min(beat, self.expires_at)

    def on_timer(self, now: float) -> Action:
        """What to do at *now* (called at or after :meth:`deadline`)."""
        if self.closed is not None:
            return None
        if now >= self.expires_at:
            return self.close(EXPIRED)
        if self._pong_due is not None:
            if now < self._pong_due:
                return None
            alive = self._ponged or self._inbound > self._inbound_at_ping or self.reader_waiting
            ping_sent = self._pong_due - self._policy.heartbeat_timeout
            self._pong_due = None
            if not alive:
                return self.close(HEARTBEAT_TIMEOUT)
            self._next_ping = ping_sent + self._policy.heartbeat_interval
        if now >= self._next_ping:
            self._pong_due = now + self._policy.heartbeat_timeout
            self._ponged = False
            self._inbound_at_ping = self._inbound
            return PING
        return None

    def on_inbound(self) -> None:
        """A frame arrived: the peer is alive."""
        self._inbound += 1

    def on_pong(self) -> None:
        """The pong of the outstanding ping arrived."""
        self._ponged = True

    def on_refresh(self, expires_at: float) -> None:
        """A refreshed token moves the expiry later (never earlier)."""
        self.expires_at = max(self.expires_at, expires_at)

    def on_bad_frame(self, now: float) -> Close | None:
        """A frame was refused; the close it calls for once too many came too fast."""
        if self._bad_frames.take(now) is None:
            return None
        return self.close(POLICY)

    def close(self, verdict: Close) -> Close | None:
        """Decide to close with *verdict*; None if a close was decided already."""
        if self.closed is not None:
            return None
        self.closed = verdict
        return verdict
