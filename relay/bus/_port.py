"""The Bus port: route events to whichever relay process holds a device.

A message is already in the store when it is published, so a publish that
reaches nobody (device offline, process gone) loses nothing: the device gets
it on replay. The in-process adapter delivers straight to this process's
connections; a shared adapter publishes to the process that holds the
device and delivers to its :class:`Sink` there.
"""

from __future__ import annotations

from typing import Protocol

from ._events import Event


class Sink(Protocol):
    """What a process does with events routed to it (its live connections)."""

    def handle(self, event: Event) -> None:
        """Act on *event* for the connections held here; must never block.

        A connection whose queue is full is closed instead of waited for.
        """


class Bus(Protocol):
    def attach(self, sink: Sink | None) -> None:
        """Deliver events routed to this process to *sink* (None: drop them)."""

    async def publish(self, event: Event) -> None:
        """Route *event* to the processes holding its devices or session."""

    async def announce(self, device_id: str) -> None:
        """This process now holds a connection of *device_id*: route its events here.

        Awaited before the connection's replay starts, so that a message
        stored after the replay read the store is pushed here, not lost.
        """

    def withdraw(self, device_id: str) -> None:
        """This process holds one connection fewer of *device_id* (never blocks)."""

    async def ping(self) -> None:
        """Return if the bus is reachable (readiness); raise otherwise."""
