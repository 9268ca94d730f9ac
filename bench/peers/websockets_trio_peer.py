"""Peer: trio + the `websockets` library's Trio server (websockets.trio, new in 15.x+).

Same shape as trio_ws_peer.py, so the two differ only in the WebSocket
library: the handler is the reader, its nursery holds one writer fed by an
unbounded memory channel, deliveries are ``send_nowait``. ``--echo``: the
handler echoes directly. Compression and keepalive pings are off, as in relay.
"""

from __future__ import annotations

import math
import signal
from contextlib import suppress
from functools import partial

import trio
from _common import Peer, Registry, announce, parse_args
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection, serve

Outbox = trio.MemorySendChannel[str]
registry: Registry[Outbox] = Registry()


async def _write(ws: ServerConnection, frames: trio.MemoryReceiveChannel[str]) -> None:
    with suppress(ConnectionClosed):
        async for frame in frames:
            await ws.send(frame)


async def relay_handler(ws: ServerConnection) -> None:
    assert ws.request is not None  # set by the opening handshake
    peer = Peer(ws.request.path)
    outbox, frames = trio.open_memory_channel[str](math.inf)
    registry.add(peer.user, outbox)
    try:
        outbox.send_nowait(peer.ready())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write, ws, frames)
            with suppress(ConnectionClosed):
                async for data in ws:
                    answer, to, message = peer.on_frame(data)
                    if answer is not None:
                        outbox.send_nowait(answer)
                    if message is not None:
                        for target in registry.of(to):
                            target.send_nowait(message)
            nursery.cancel_scope.cancel()
    finally:
        registry.remove(peer.user, outbox)


async def echo_handler(ws: ServerConnection) -> None:
    with suppress(ConnectionClosed):
        async for data in ws:
            await ws.send(data)


async def main(host: str, port: int, echo: bool) -> None:
    handler = echo_handler if echo else relay_handler
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve, handler, port, host=host, compression=None, ping_interval=None)
            )
            announce(server.listeners[0].socket.getsockname()[1])
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    args = parse_args("relay's peer protocol on trio + websockets.trio")
    trio.run(main, args.host, args.port, args.echo)
