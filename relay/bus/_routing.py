"""How the shared bus names things and decides where events go. Pure: no I/O.

Layout under ``[bus] prefix`` (``relay:`` by default)::

    {prefix}bus:proc:{process}   channel: events for devices that process holds
    {prefix}bus:all              channel: revocations and resync requests, for everyone
    {prefix}bus:dev:{device}     string: the process holding the device (TTL: presence_ttl)
    {prefix}bus:revoked          stream: recent revocations, re-read after a lost subscription

On the wire every message is an :class:`Envelope` as JSON: the publishing
process and typed events, in order (msgspec's tagged union decodes them).
One publish carries every event of a batch for that process
(:func:`envelopes`), so the receiver pushes them all before any connection
writes: frames for one socket then share writes, as local deliveries do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from ._events import Event, MessageQueued, PrekeysLow


class Envelope(msgspec.Struct, frozen=True):
    """Events on a channel, in order, and the process that sent them."""

    origin: str
    events: tuple[Event, ...]


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Envelope)

MAX_ENVELOPE_BYTES = 256 * 1024
"""An envelope's events take about this much at most (one larger event goes alone).

Keeps each pub/sub message far below Redis's output-buffer limits for
subscribers, whatever the batch and the message bodies.
"""


def envelopes(
    origin: str, events: Sequence[Event], max_bytes: int = MAX_ENVELOPE_BYTES
) -> list[bytes]:
    """*events*, in order, as few encoded :class:`Envelope` s as *max_bytes* allows."""
    head = b'{"origin":' + ENCODER.encode(origin) + b',"events":['
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for event in events:
        # Each event is encoded once; the envelope around them is joined by
        # hand (the same JSON msgspec writes for an Envelope) to size it.
        encoded = ENCODER.encode(event)
        if part and size + len(encoded) > max_bytes:
            out.append(head + b",".join(part) + b"]}")
            part, size = [], 0
        part.append(encoded)
        size += len(encoded) + 1
    if part:
        out.append(head + b",".join(part) + b"]}")
    return out


class BusKeys:
    """The names of the bus's channels and keys under *prefix*."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def process(self, process_id: str) -> str:
        return f"{self.prefix}bus:proc:{process_id}"

    @property
    def everyone(self) -> str:
        return f"{self.prefix}bus:all"

    def presence(self, device_id: str) -> str:
        return f"{self.prefix}bus:dev:{device_id}"

    @property
    def revocations(self) -> str:
        return f"{self.prefix}bus:revoked"


def targets(event: Event) -> tuple[str, ...]:
    """The devices an event is for (none: it goes to every process, or to none)."""
    if isinstance(event, MessageQueued):
        return event.device_ids
    if isinstance(event, PrekeysLow):
        return (event.device_id,)
    return ()


def route(
    device_ids: Iterable[str], owners: Mapping[str, str | None], me: str
) -> dict[str, tuple[str, ...]]:
    """Which other process gets which of *device_ids*, by the presence map *owners*.

    Devices held by nobody (or whose owner is unknown) are left out, as are
    those the map says *me* holds: their events are delivered here directly.
    Devices keep their order within each process's share.
    """
    shares: dict[str, list[str]] = {}
    for device_id in device_ids:
        owner = owners.get(device_id)
        if owner is not None and owner != me:
            shares.setdefault(owner, []).append(device_id)
    return {owner: tuple(devices) for owner, devices in shares.items()}


def narrowed(event: Event, device_ids: tuple[str, ...]) -> Event:
    """*event* for *device_ids* only, as another process receives it.

    ``received_at`` is this process's monotonic clock, meaningless elsewhere,
    so it travels as 0.0 (see :class:`~relay.bus.MessageQueued`).
    """
    if isinstance(event, MessageQueued):
        return msgspec.structs.replace(event, device_ids=device_ids, received_at=0.0)
    return event


class Presence:
    """The devices this process holds, with how many connections each.

    A device's route is written when its first connection here is announced
    and removed (if still ours) when its last one is withdrawn; the
    removals wait in :attr:`withdrawn` for the next batch.
    """

    __slots__ = ("_held", "withdrawn")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self.withdrawn: set[str] = set()

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def devices(self) -> list[str]:
        return list(self._held)

    def add(self, device_id: str) -> None:
        """One more connection of *device_id* here (a withdrawal in waiting is void)."""
        self._held[device_id] = self._held.get(device_id, 0) + 1
        self.withdrawn.discard(device_id)

    def remove(self, device_id: str) -> bool:
        """One connection fewer; True if it was the last one (its route must go)."""
        count = self._held.get(device_id, 0)
        if count > 1:
            self._held[device_id] = count - 1
            return False
        if count == 1:
            del self._held[device_id]
            self.withdrawn.add(device_id)
            return True
        return False

    def take_withdrawn(self) -> list[str]:
        """The devices whose routes are to be removed now (and forget them)."""
        batch = [device_id for device_id in self.withdrawn if device_id not in self._held]
        self.withdrawn = set()
        return batch
