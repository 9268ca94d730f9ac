"""The in-process Bus: one relay process, delivery by direct call."""

from __future__ import annotations

from ._events import Event
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

    async def publish(self, event: Event) -> None:
        if self._sink is not None:
            self._sink.handle(event)

    async def announce(self, device_id: str) -> None:
        return None  # one process: every event is routed here anyway

    def withdraw(self, device_id: str) -> None:
        return None

    async def ping(self) -> None:
        return None
