"""The accept loop both servers share: admit or turn away, then hand over.

``trio.serve_listeners`` hands every accepted socket to a handler task. This
loop asks an :class:`~relay.net.Admission` first: an admitted socket runs its
handler in the handler nursery and gives its slots back when the handler
ends, on every path; a refused one gets a canned answer and is hung up
without any HTTP parsing, so turning a flood away costs little and holds
nothing for long.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

import trio

from ._admission import Admission, Ticket, Turnaway
from ._slots import ConnectionSlots
from ._source import source_of

Handler = Callable[[trio.SocketStream, Ticket], Awaitable[None]]
OnTurnaway = Callable[[str, Turnaway], None]
OnHandlerError = Callable[[str, Exception], None]

LINGER = 1.0
"""Seconds a turned-away socket may take to send its request and read the answer."""

MAX_LINGERING = 1024
"""Turned-away sockets waited on at once; past this they are answered and closed at once."""

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY = 0.1  # seconds to wait after running out of descriptors (as trio does)


async def serve_admitted(
    listeners: Sequence[trio.SocketListener],
    admission: Admission,
    handler: Handler,
    *,
    handler_nursery: trio.Nursery,
    on_turnaway: OnTurnaway,
    on_out_of_descriptors: Callable[[], None] = lambda: None,
    on_handler_error: OnHandlerError,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener until cancelled; never returns otherwise.

    Supports ``nursery.start()``: reports once every accept loop runs.
    Running out of file descriptors is reported through
    *on_out_of_descriptors* and retried after a short pause, as
    ``trio.serve_listeners`` does; any other accept error propagates.

    A handler that raises ends its own connection only: the error goes to
    *on_handler_error* (with the peer's source) and accepting goes on, so
    that no one peer's socket, whatever state it is in, can stop the server
    (unlike ``trio.serve_listeners``, where it would).
    """
    lingering = ConnectionSlots(total=MAX_LINGERING)

    async def loop(listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                on_out_of_descriptors()
                await trio.sleep(_ACCEPT_RETRY)
                continue
            source = peer_ip(stream)
            verdict = admission.admit(source)
            if isinstance(verdict, Ticket):
                handler_nursery.start_soon(_serve, handler, stream, verdict, on_handler_error)
                continue
            on_turnaway(source, verdict)
            if not _answer_now(stream, verdict.response):
                if lingering.take("") is None:
                    handler_nursery.start_soon(_answer_later, stream, verdict.response, lingering)
                else:
                    _hang_up(stream, verdict.response)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(loop, listener)
        task_status.started()


async def _serve(
    handler: Handler, stream: trio.SocketStream, ticket: Ticket, on_error: OnHandlerError
) -> None:
    try:
        await handler(stream, ticket)
    except Exception as exc:  # one connection's failure is its own
        on_error(ticket.source, exc)
    finally:
        ticket.give_back()
        await trio.aclose_forcefully(stream)


def peer_ip(stream: trio.SocketStream) -> str:
    """The peer's source key (:func:`source_of`; "unknown" if the socket has none)."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return source_of(str(peer[0])) if isinstance(peer, tuple) else "unknown"


def _answer_now(stream: trio.SocketStream, response: bytes) -> bool:
    """The common case, with no task and no await: True if fully handled.

    A flooding client's request has usually arrived by the time its
    connection is accepted. Then: read the request away, write the answer (a
    fresh socket's send buffer takes it whole), shut down, close — a clean
    FIN. If the request is not there yet, leave it to :func:`_answer_later`.
    """
    sock = stream.socket
    try:
        # Trio's sockets are non-blocking, so plain os calls never block here.
        request = os.read(sock.fileno(), 4096)
    except BlockingIOError:
        return False
    except OSError:
        request = b""
    try:
        if request:
            os.write(sock.fileno(), response)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the peer is gone: nothing to answer
    sock.close()
    return True


def _hang_up(stream: trio.SocketStream, response: bytes) -> None:
    """Too many lingering already: write the answer if it fits, and close now."""
    sock = stream.socket
    with contextlib.suppress(OSError):
        os.write(sock.fileno(), response)
    sock.close()


async def _answer_later(
    stream: trio.SocketStream, response: bytes, lingering: ConnectionSlots
) -> None:
    """Wait (at most LINGER) for the request, answer, and close without a reset."""
    try:
        with trio.move_on_after(LINGER):
            await stream.send_all(response)
            stream.socket.shutdown(socket.SHUT_WR)
            # Reading what the client sent (its request) before closing keeps
            # the kernel from answering with RST, which could destroy the
            # answer before the client reads it.
            while await stream.receive_some(4096):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        lingering.give_back("")
        await trio.aclose_forcefully(stream)
