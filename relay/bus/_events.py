"""What travels on the bus: typed domain events, never finished WebSocket frames.

The HTTP side and the delivery pipeline publish these; whichever process
holds the device turns them into frames (relay/ws). They are msgspec
structs, so a shared bus can carry them as compact JSON; ``received_at`` is
this process's monotonic clock and means nothing elsewhere (a remote
process receives 0.0 and does not count the delivery latency).
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec


class MessageQueued(msgspec.Struct, frozen=True, tag="message"):
    """A message was stored for these devices; push it to the ones online."""

    device_ids: tuple[str, ...]
    seq: int  # store order: a connection skips what its replay already sent
    message_id: str
    sender: str  # username
    sender_device: str
    body: msgspec.Raw  # the client's JSON, verbatim
    sent_at: float
    received_at: float = 0.0  # monotonic, in the publishing process only


class SessionRevoked(msgspec.Struct, frozen=True, tag="revoked"):
    """Close every connection of the session with 4003."""

    session_id: str
    reason: str


class PrekeysLow(msgspec.Struct, frozen=True, tag="prekeys_low"):
    """The device has *count* one-time prekeys left, below low water."""

    device_id: str
    count: int


class Resync(msgspec.Struct, frozen=True, tag="resync"):
    """This process may have missed events (its bus reconnected): catch up from the store.

    Delivered by a shared bus to its own sink after it lost its subscription,
    and when another process asks (it could not publish for a while); never
    published by callers.
    """


Event: TypeAlias = MessageQueued | SessionRevoked | PrekeysLow | Resync
