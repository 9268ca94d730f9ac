"""This process's live connections, indexed for routing and revocation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..obs import Metrics

if TYPE_CHECKING:
    from ._connection import Connection


class ConnectionRegistry:
    """Connections by device, session and user; the local Bus sink.

    Every method is synchronous and never blocks: delivery pushes onto each
    connection's bounded queue, and a full queue closes that connection
    (1013) instead of making anyone wait.
    """

    def __init__(self, metrics: Metrics, max_per_user: int) -> None:
        self._metrics = metrics
        self._max_per_user = max_per_user
        self._by_device: dict[str, set[Connection]] = defaultdict(set)
        self._by_session: dict[str, set[Connection]] = defaultdict(set)
        self._per_user: dict[str, int] = defaultdict(int)
        self._all: set[Connection] = set()

    def queue_depths(self) -> list[int]:
        """Frames waiting in each connection's outbound queue (for metrics)."""
        return [conn.queued() for conn in self._all]

    def __len__(self) -> int:
        return len(self._all)

    def has_room_for(self, user_id: str) -> bool:
        return self._per_user.get(user_id, 0) < self._max_per_user

    def add(self, conn: Connection) -> None:
        self._all.add(conn)
        self._by_device[conn.device_id].add(conn)
        self._by_session[conn.session_id].add(conn)
        self._per_user[conn.user_id] += 1
        self._metrics.ws_connections.set(len(self._all))

    def remove(self, conn: Connection) -> None:
        """Forget *conn*; idempotent (every exit path calls it)."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        _discard(self._by_device, conn.device_id, conn)
        _discard(self._by_session, conn.session_id, conn)
        self._per_user[conn.user_id] -= 1
        if self._per_user[conn.user_id] <= 0:
            del self._per_user[conn.user_id]
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
