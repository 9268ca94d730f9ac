"""The in-process Bus: one relay process, delivery by direct call."""

from __future__ import annotations

from collections.abc import Sequence

from ._port import Sink


class LocalBus:
    """Delivers every event to the local :class:`Sink` (set once it exists).

    Events published before a sink is attached, or after it is detached, go
    nowhere, which is safe: messages are stored first and replayed.
    """

    def __init__(self) -> None:
        self._sink: Sink | None = None

    def attach(self, sink: Sink | None) -> None:
        self._sink = sink

    async def publish_message(
        self, device_ids: Sequence[str], seq: int, frame: str, received_at: float
    ) -> None:
        if self._sink is not None:
            self._sink.deliver(device_ids, seq, frame, received_at)

    async def publish_revocation(self, session_id: str, reason: str) -> None:
        if self._sink is not None:
            self._sink.revoke(session_id, reason)

    async def publish_notice(self, device_id: str, frame: str) -> None:
        if self._sink is not None:
            self._sink.notify(device_id, frame)

    async def ping(self) -> None:
        return None
