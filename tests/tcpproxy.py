"""A TCP forwarder a test can cut and restore: a database that goes away and comes back.

``stop()`` closes the listening socket and every forwarded connection (both
ends see them close, as when a server restarts); ``start()`` listens again
on the same port, so clients configured with it reconnect by themselves.
"""

from __future__ import annotations

import trio


class TcpProxy:
    """Forwards 127.0.0.1:<port> to *host*:*target_port* while it is up."""

    def __init__(self, host: str, target_port: int) -> None:
        self._host = host
        self._target_port = target_port
        self.port = 0  # chosen by the first start(), kept afterwards
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery | None = None) -> None:
        """Listen (again) and forward, in *nursery* (the first start's, when restarting).

        Returns once the port accepts connections.
        """
        assert self._scope is None, "already up"
        self._nursery = nursery or self._nursery
        assert self._nursery is not None, "the first start needs a nursery"
        await self._nursery.start(self._serve)

    async def stop(self) -> None:
        """Refuse new connections and cut every open one; returns once all are closed."""
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                self.port = listeners[0].socket.getsockname()[1]
                task_status.started()
                await trio.serve_listeners(self._forward, listeners)
        finally:
            self._scope = None
            self._stopped.set()

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(self._host, self._target_port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope) -> None:
    """Copy until either side ends, then end both (no half-open connections)."""
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        both.cancel()
