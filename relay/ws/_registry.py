"""This process's live connections, indexed for routing and revocation."""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from ..bus import Event, MessageQueued, PrekeysLow, Resync, SessionRevoked
from ..config import WsConfig
from ..net import ConnectionSlots, Full
from ..obs import Metrics
from ._frames import message_frame, prekeys_low_frame
from ._life import Close

REVOKED = Close(4003, "session revoked")


class Peer(Protocol):
    """A live connection, as the registry sees it (``Connection`` is one)."""

    user_id: str
    device_id: str
    session_id: str

    def push(self, frame: str) -> None: ...

    def push_message(self, seq: int, frame: str, received_at: float) -> None: ...

    def close(self, verdict: Close) -> None: ...

    def queued(self) -> int: ...

    def catch_up(self) -> None: ...


class ConnectionRegistry:
    """Peers by device, session and user; the local Bus sink.

    Every method is synchronous and never blocks: delivery pushes onto each
    connection's bounded queue, and a full queue closes that connection
    (1013) instead of making anyone wait.

    Places are reserved before a connection exists (:meth:`reserve`, at the
    end of the handshake) and given back by whoever reserved them
    (:meth:`release`): a reservation is atomic, so simultaneous handshakes
    can never take this process past ``ws.max_connections``, whatever
    awaits come between the check and the connection's registration. The
    per-user cap is a limit of every process together (the Limits port's
    ``ws_connections_user`` places, taken by the server); here each user's
    places are only counted, for :meth:`top_users`.
    """

    def __init__(self, metrics: Metrics, config: WsConfig) -> None:
        self._metrics = metrics
        self._places = ConnectionSlots(total=config.max_connections)
        self._by_device: dict[str, set[Peer]] = defaultdict(set)
        self._by_session: dict[str, set[Peer]] = defaultdict(set)
        self._all: set[Peer] = set()

    def queue_depths(self) -> list[int]:
        """Frames waiting in each connection's outbound queue (for metrics)."""
        return [conn.queued() for conn in self._all]

    def __len__(self) -> int:
        return len(self._all)

    def full(self) -> bool:
        """True if every place is reserved (a cheap early refusal; :meth:`reserve` decides)."""
        return self._places.full()

    def reserve(self, user_id: str) -> Full | None:
        """Reserve a place for one of *user_id*'s connections; None if done, else Full.TOTAL."""
        return self._places.take(user_id)

    def release(self, user_id: str) -> None:
        """Give back a place taken with :meth:`reserve`."""
        self._places.give_back(user_id)

    def reserved(self) -> int:
        return self._places.used

    def top_users(self, n: int) -> list[tuple[str, int]]:
        """The *n* users with the most connections here: (user id, connections)."""
        return self._places.top(n)

    def add(self, conn: Peer) -> None:
        """Index a connection whose place is reserved, for routing and revocation."""
        self._all.add(conn)
        self._by_device[conn.device_id].add(conn)
        self._by_session[conn.session_id].add(conn)
        self._metrics.ws_connections.set(len(self._all))

    def remove(self, conn: Peer) -> None:
        """Forget *conn*; idempotent (every exit path calls it)."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        _discard(self._by_device, conn.device_id, conn)
        _discard(self._by_session, conn.session_id, conn)
        self._metrics.ws_connections.set(len(self._all))

    # -- Bus sink -------------------------------------------------------
    def handle(self, event: Event) -> None:
        """Turn a bus event into frames for the connections held here; never blocks."""
        if isinstance(event, MessageQueued):
            self._deliver(event)
        elif isinstance(event, SessionRevoked):
            for conn in tuple(self._by_session.get(event.session_id, ())):
                conn.close(REVOKED)
        elif isinstance(event, Resync):
            for conn in tuple(self._all):
                conn.catch_up()
        elif isinstance(event, PrekeysLow):
            frame = prekeys_low_frame(event.count)
            for conn in tuple(self._by_device.get(event.device_id, ())):
                conn.push(frame)

    def _deliver(self, event: MessageQueued) -> None:
        frame: str | None = None  # encoded once, and only if a target is online here
        for device_id in event.device_ids:
            for conn in tuple(self._by_device.get(device_id, ())):
                if frame is None:
                    frame = message_frame(
                        event.message_id, event.sender, event.sender_device, event.body,
                        event.sent_at,
                    )
                conn.push_message(event.seq, frame, event.received_at)

    def close_all(self, verdict: Close) -> None:
        for conn in tuple(self._all):
            conn.close(verdict)


def _discard(index: dict[str, set[Peer]], key: str, conn: Peer) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
