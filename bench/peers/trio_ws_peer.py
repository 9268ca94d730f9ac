"""Peer: trio + trio-websocket, shaped like relay's connection (see README.md).

Each connection's handler is its reader; its nursery holds one writer fed by
an unbounded memory channel, so deliveries from other connections are a
``send_nowait`` and never block the sender (relay's shape, minus auth, store,
limits, heartbeat and batched writes). ``--echo``: the handler echoes directly.
"""

from __future__ import annotations

import math
import signal
from contextlib import suppress
from functools import partial

import trio
from _common import Peer, Registry, announce, parse_args
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

Outbox = trio.MemorySendChannel[str]
registry: Registry[Outbox] = Registry()


async def _write(ws: WebSocketConnection, frames: trio.MemoryReceiveChannel[str]) -> None:
    with suppress(ConnectionClosed):
        async for frame in frames:
            await ws.send_message(frame)


async def relay_handler(request: WebSocketRequest) -> None:
    with suppress(ConnectionClosed):
        ws = await request.accept()
        peer = Peer(request.path)
        outbox, frames = trio.open_memory_channel[str](math.inf)
        registry.add(peer.user, outbox)
        try:
            outbox.send_nowait(peer.ready())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, ws, frames)
                with suppress(ConnectionClosed):
                    while True:
                        answer, to, message = peer.on_frame(await ws.get_message())
                        if answer is not None:
                            outbox.send_nowait(answer)
                        if message is not None:
                            for target in registry.of(to):
                                target.send_nowait(message)
                nursery.cancel_scope.cancel()
        finally:
            registry.remove(peer.user, outbox)


async def echo_handler(request: WebSocketRequest) -> None:
    with suppress(ConnectionClosed):
        ws = await request.accept()
        while True:
            await ws.send_message(await ws.get_message())


async def main(host: str, port: int, echo: bool) -> None:
    handler = echo_handler if echo else relay_handler
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, handler, host, port, None))
            announce(server.port)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    args = parse_args("relay's peer protocol on trio + trio-websocket")
    trio.run(main, args.host, args.port, args.echo)
