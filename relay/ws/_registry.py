"""This process's live connections, indexed for routing and revocation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..net import ConnectionSlots, Full
from ..obs import Metrics

if TYPE_CHECKING:
    from ._connection import Connection


class ConnectionRegistry:
    """Connections by device, session and user; the local Bus sink.

    Every method is synchronous and never blocks: delivery pushes onto each
    connection's bounded queue, and a full queue closes that connection
    (1013) instead of making anyone wait.

    Places are reserved before a connection exists (:meth:`reserve`, at the
    end of the handshake) and given back by whoever reserved them
    (:meth:`release`): a reservation is atomic, so simultaneous handshakes
    can never take a user past ``max_per_user`` or everyone past
    ``max_total``, whatever awaits come between the check and the
    connection's registration.
    """

    def __init__(self, metrics: Metrics, *, max_total: int, max_per_user: int) -> None:
        self._metrics = metrics
        self._places = ConnectionSlots(total=max_total, per_source=max_per_user)
        self._by_device: dict[str, set[Connection]] = defaultdict(set)
        self._by_session: dict[str, set[Connection]] = defaultdict(set)
        self._all: set[Connection] = set()

    def queue_depths(self) -> list[int]:
        """Frames waiting in each connection's outbound queue (for metrics)."""
        return [conn.queued() for conn in self._all]

    def __len__(self) -> int:
        return len(self._all)

    def full(self) -> bool:
        """True if every place is reserved (a cheap early refusal; :meth:`reserve` decides)."""
        return self._places.full()

    def reserve(self, user_id: str) -> Full | None:
        """Reserve a place for one of *user_id*'s connections; None if done, else why not."""
        return self._places.take(user_id)

    def release(self, user_id: str) -> None:
        """Give back a place taken with :meth:`reserve`."""
        self._places.give_back(user_id)

    def reserved(self) -> int:
        return self._places.used

    def add(self, conn: Connection) -> None:
        """Index a connection whose place is reserved, for routing and revocation."""
        self._all.add(conn)
        self._by_device[conn.device_id].add(conn)
        self._by_session[conn.session_id].add(conn)
        self._metrics.ws_connections.set(len(self._all))

    def remove(self, conn: Connection) -> None:
        """Forget *conn*; idempotent (every exit path calls it)."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        _discard(self._by_device, conn.device_id, conn)
        _discard(self._by_session, conn.session_id, conn)
        self._metrics.ws_connections.set(len(self._all))

    # -- Bus sink -------------------------------------------------------
    def deliver(self, device_ids: Sequence[str], seq: int, frame: str, received_at: float) -> None:
        for device_id in device_ids:
            for conn in tuple(self._by_device.get(device_id, ())):
                conn.push_message(seq, frame, received_at)

    def revoke(self, session_id: str, reason: str) -> None:
        for conn in tuple(self._by_session.get(session_id, ())):
            conn.close(4003, "session revoked")

    def notify(self, device_id: str, frame: str) -> None:
        for conn in tuple(self._by_device.get(device_id, ())):
            conn.push(frame)

    def close_all(self, code: int, reason: str) -> None:
        for conn in tuple(self._all):
            conn.close(code, reason)


def _discard(index: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
