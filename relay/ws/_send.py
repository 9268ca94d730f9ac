"""Write several frames with one socket write.

trio-websocket's ``send_message`` frames one message and makes one
``send_all`` (one syscall, one lock round-trip, one checkpoint) per call. A
connection's writer usually finds several frames waiting (a batch of
``accepted`` after a group commit, a burst of messages), so it frames them
all with the connection's wsproto state and writes the bytes at once, under
the same lock and with the same error handling as ``_send``. This reaches
into trio-websocket 0.12 internals; when they are missing (another version)
it falls back to one ``send_message`` per frame, which is always correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import TextMessage

_INTERNALS = ("_close_reason", "_wsproto", "_stream_lock", "_stream", "_abort_web_socket")


def can_batch(ws: WebSocketConnection) -> bool:
    return all(hasattr(ws, name) for name in _INTERNALS)


async def send_frames(ws: WebSocketConnection, frames: Sequence[str]) -> None:
    """Send *frames* in order, as separate WebSocket text messages.

    Raises ConnectionClosed like ``send_message``. On cancellation the bytes
    may be partly written; the connection is then unusable, as with
    ``send_message``.
    """
    if len(frames) == 1 or not can_batch(ws):
        for frame in frames:
            await ws.send_message(frame)
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    protocol = ws._wsproto
    data = b"".join([protocol.send(TextMessage(data=frame)) for frame in frames])
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None
