"""Shed over-limit sources at accept, before any HTTP parsing.

A refused handshake costs about as much CPU as an accepted one once its
HTTP request has been parsed and a WebSocket connection object built. When
a source IP has already exhausted its handshake bucket, the next socket it
opens gets a canned ``429`` straight away: no request parsing, no
trio-websocket connection, no handler. Sources under their limit pass
through untouched and are checked again (authoritatively) by the gate.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import trio

from ..limits import retry_after_header

ShedCheck = Callable[[str], "float | None"]
"""Given a peer IP, seconds until it may handshake again, or None if it may now."""

LINGER = 1.0  # seconds a shed socket may take to read its answer and hang up


def canned_429(retry_after: float) -> bytes:
    """The whole response to a shed handshake."""
    return (
        b"HTTP/1.1 429 Too Many Requests\r\n"
        b"Retry-After: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        % retry_after_header(retry_after).encode()
    )


class SheddingListener(trio.abc.Listener[trio.SocketStream]):
    """Wraps a SocketListener; answers over-limit peers itself.

    :meth:`accept` returns only streams from peers under their limit. Shed
    streams are answered in *nursery* (a short task each: write the 429,
    read until the client hangs up or ``LINGER`` passes, close), so the
    accept loop never waits on a slow client. *on_shed* is told each time.
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        check: ShedCheck,
        nursery: trio.Nursery,
        on_shed: Callable[[str, float], None],
    ) -> None:
        self.inner = inner
        self._check = check
        self._nursery = nursery
        self._on_shed = on_shed

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.inner.socket

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self.inner.accept()
            ip = _peer_ip(stream)
            wait = self._check(ip) if ip is not None else None
            if wait is None:
                return stream
            self._on_shed(ip or "unknown", wait)
            response = canned_429(wait)
            if not _answer_now(stream, response):
                self._nursery.start_soon(_answer, stream, response)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _peer_ip(stream: trio.SocketStream) -> str | None:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return None
    return str(peer[0]) if isinstance(peer, tuple) else None


def _answer_now(stream: trio.SocketStream, response: bytes) -> bool:
    """The common case, with no task and no await: True if fully handled.

    A flooding client's request has usually arrived by the time its
    connection is accepted. Then: write the 429 (a fresh socket's send
    buffer takes it whole), read the request away, shut down, close — a
    clean FIN. If the request is not there yet, or the write is partial,
    leave it to :func:`_answer`, which waits for it.
    """
    sock = stream.socket
    fd = sock.fileno()
    try:
        # Trio's sockets are non-blocking, so plain os calls never block here.
        request = os.read(fd, 4096)
    except BlockingIOError:
        return False
    except OSError:
        request = b""
    try:
        if request:
            # A fresh socket's send buffer takes ~100 bytes whole; were it
            # ever short, the client gets a truncated answer and a close.
            os.write(fd, response)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the peer is gone: nothing to answer
    sock.close()
    return True


async def _answer(stream: trio.SocketStream, response: bytes) -> None:
    """Write the 429, let the client read it, and close without a reset."""
    try:
        with trio.move_on_after(LINGER):
            await stream.send_all(response)
            stream.socket.shutdown(socket.SHUT_WR)
            # Reading what the client sent (its request) before closing
            # keeps the kernel from answering with RST, which could destroy
            # the 429 before the client reads it.
            while await stream.receive_some(4096):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
