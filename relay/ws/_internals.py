"""Every use of trio-websocket's internals, in one place (pinned: see pyproject.toml).

trio-websocket 0.12 has no public call for five things relay needs:

- **Serving one accepted socket** (:func:`serve_connection`). relay accepts
  sockets itself (to turn floods away before any parsing, see
  :mod:`relay.net`) and hands each one to the server's per-connection code,
  which ``WebSocketServer.run`` would otherwise call from its own accept loop.
- **Batched writes** (:func:`send_frames`). ``send_message`` frames one
  message and makes one ``send_all`` (one syscall, one lock round-trip, one
  checkpoint) per call. A connection's writer usually finds several frames
  waiting (a batch of ``accepted`` after a group commit, a burst of
  messages), so it frames them all with the connection's wsproto state and
  writes the bytes at once, under the same lock and with the same error
  handling as ``_send``.
- **A ping that does not wait for its pong** (:func:`prepare_ping`).
  ``ping()`` sends and then waits for the pong; one timer task pings every
  connection (``_heartbeats.py``), so it needs the framed bytes (written by
  the connection's own writer) and an event to look at later.
- **Hanging up a rejected handshake** (:func:`drop_rejected`). The library
  marks a rejected connection closed without closing its stream, so its
  reader task (and the socket) would live until the client hangs up.
- **Freeing the reader after a close** (:func:`release_reader`). When the
  handler stops reading, the library's reader task may sit blocked on its
  full message queue. ``aclose()`` normally frees it by closing that queue,
  but not when sending the close frame fails (the peer reset the
  connection) or the connection was already marked closed: then the reader
  waits for ever, and so does the connection's nursery. A peer that sends a
  burst and resets could pile such tasks up.

When the internals are missing (another version) each helper falls back to
the public API or does nothing, which is always correct but slower or leakier;
``tests/unit/ws/test_internals.py`` checks that the installed version has them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)
from wsproto.events import Ping, TextMessage

_BATCH_INTERNALS = ("_close_reason", "_wsproto", "_stream_lock", "_stream", "_abort_web_socket")


def can_batch(ws: WebSocketConnection) -> bool:
    """True if :func:`send_frames` can write several frames in one ``send_all``."""
    return all(hasattr(ws, name) for name in _BATCH_INTERNALS)


async def send_frames(ws: WebSocketConnection, frames: Sequence[str | bytes]) -> None:
    """Send *frames* in order: each ``str`` as a WebSocket text message, each
    ``bytes`` as it is (a frame made by :func:`prepare_ping`).

    Raises ConnectionClosed like ``send_message``. On cancellation the bytes
    may be partly written; the connection is then unusable, as with
    ``send_message``.
    """
    if not can_batch(ws):
        for frame in frames:
            if isinstance(frame, str):
                await ws.send_message(frame)
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    protocol = ws._wsproto
    data = b"".join(
        [protocol.send(TextMessage(data=f)) if isinstance(f, str) else f for f in frames]
    )
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None


def prepare_ping(ws: WebSocketConnection) -> tuple[bytes, trio.Event] | None:
    """A framed ping for the connection's writer, and the event its pong will set.

    None without the internals (another version): then only inbound frames
    prove the peer alive.
    """
    pings = getattr(ws, "_pings", None)
    protocol = getattr(ws, "_wsproto", None)
    if pings is None or protocol is None or ws._close_reason:
        return None
    payload = secrets.token_bytes(8)
    while payload in pings:  # pragma: no cover - 64 random bits
        payload = secrets.token_bytes(8)
    event = trio.Event()
    pings[payload] = event
    return protocol.send(Ping(payload=payload)), event


async def serve_connection(server: WebSocketServer, stream: trio.SocketStream) -> None:
    """Run *server*'s handshake and handler for one accepted *stream*."""
    await server._handle_connection(stream)


async def drop_rejected(request: WebSocketRequest) -> None:
    """Close the TCP connection of a handshake that ``reject()`` answered."""
    close_stream = getattr(request._connection, "_close_stream", None)
    if close_stream is not None:
        await close_stream()


def release_reader(ws: WebSocketConnection) -> None:
    """Close the connection's message queue, so a reader blocked on it moves on.

    Call after ``aclose()``; never blocks. The reader then finds the stream
    closed and ends, and with it the library's per-connection nursery.
    """
    channel = getattr(ws, "_recv_channel", None)
    if channel is not None:
        channel.close()


async def close_and_release(ws: WebSocketConnection, code: int, reason: str) -> None:
    """``ws.aclose(code, reason)`` then :func:`release_reader`, whatever happens."""
    try:
        await ws.aclose(code, reason)
    finally:
        release_reader(ws)
