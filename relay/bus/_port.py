"""The Bus port: route events to whichever relay process holds a device.

A message is already in the store when it is published, so a publish that
reaches nobody (device offline, process gone) loses nothing: the device gets
it on replay. The in-process adapter delivers straight to this process's
connections; a Redis adapter (later) publishes to the channel of the process
that holds the device and delivers to its :class:`Sink` there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Sink(Protocol):
    """What a process does with events routed to it (its live connections)."""

    def deliver(self, device_ids: Sequence[str], seq: int, frame: str, received_at: float) -> None:
        """Push a ``message`` frame (already encoded) to these devices if held here.

        Must not block: a connection whose queue is full is closed instead.
        """

    def revoke(self, session_id: str, reason: str) -> None:
        """Close every connection of the session with 4003."""

    def notify(self, device_id: str, frame: str) -> None:
        """Push a control frame (e.g. ``prekeys_low``) to the device if held here."""


class Bus(Protocol):
    def attach(self, sink: Sink | None) -> None:
        """Deliver events routed to this process to *sink* (None: drop them)."""

    async def publish_message(
        self, device_ids: Sequence[str], seq: int, frame: str, received_at: float
    ) -> None:
        """Route a stored message's frame to the devices, wherever they are held."""

    async def publish_revocation(self, session_id: str, reason: str) -> None:
        """Tell every process that the session is revoked."""

    async def publish_notice(self, device_id: str, frame: str) -> None:
        """Route a control frame to the device, wherever it is held."""

    async def ping(self) -> None:
        """Return if the bus is reachable (readiness); raise otherwise."""
