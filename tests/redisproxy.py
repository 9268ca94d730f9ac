"""A TCP proxy in front of Redis that a test can stop and start: a controllable outage.

``stop()`` closes the listener and every proxied connection (clients see
their connection reset, new connects are refused); ``start()`` listens again
on the same port. Redis itself is untouched, so other tests are unaffected.
"""

from __future__ import annotations

import errno
import socket

import trio


class RedisProxy:
    """Forwards 127.0.0.1:<port> to *target*; :attr:`url` is what clients use."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 6379)) -> None:
        self._target = target
        self._port = 0
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port as before, if it ran already) and forward."""
        assert self._scope is None, "already running"
        self._nursery = nursery
        self._scope = await nursery.start(self._serve)

    def stop(self) -> None:
        """Close the listener and every connection through it, at once."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def resume(self) -> None:
        """Listen again on the same port, in the nursery it first ran in."""
        assert self._nursery is not None, "never started"
        await self.start(self._nursery)

    async def _serve(self, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        listener = await self._listen()
        with trio.CancelScope() as scope:
            async with listener, trio.open_nursery() as nursery:
                task_status.started(scope)
                while True:
                    client = await listener.accept()
                    nursery.start_soon(self._pipe_both, client)

    async def _listen(self) -> trio.SocketListener:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):  # the port of a just-closed listener may linger briefly
            try:
                await sock.bind(("127.0.0.1", self._port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                await trio.sleep(0.02)
        sock.listen(64)
        self._port = sock.getsockname()[1]
        return trio.SocketListener(sock)

    async def _pipe_both(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self._target)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:

                async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                    try:
                        while data := await src.receive_some(65536):
                            await dst.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pipe, client, upstream)
                nursery.start_soon(pipe, upstream, client)
