"""Peer: asyncio + the `websockets` library's asyncio server (websockets.asyncio).

The handler reads and answers its own sender with ``await ws.send``;
deliveries to other connections use ``broadcast``, which writes to their
transports at once without waiting (asyncio's non-blocking hand-off, no extra
task). ``--echo``: the handler echoes directly. Compression and keepalive
pings are off, as in relay.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress

from _common import Peer, Registry, announce, parse_args
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

registry: Registry[ServerConnection] = Registry()


async def relay_handler(ws: ServerConnection) -> None:
    assert ws.request is not None  # set by the opening handshake
    peer = Peer(ws.request.path)
    registry.add(peer.user, ws)
    try:
        with suppress(ConnectionClosed):
            await ws.send(peer.ready())
            async for data in ws:
                answer, to, message = peer.on_frame(data)
                if answer is not None:
                    await ws.send(answer)
                if message is not None:
                    broadcast(registry.of(to), message)
    finally:
        registry.remove(peer.user, ws)


async def echo_handler(ws: ServerConnection) -> None:
    with suppress(ConnectionClosed):
        async for data in ws:
            await ws.send(data)


async def main(host: str, port: int, echo: bool) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    handler = echo_handler if echo else relay_handler
    server = await serve(handler, host, port, compression=None, ping_interval=None)
    announce(server.sockets[0].getsockname()[1])
    await stop.wait()
    # Exit at once, as the other peers do, even with clients that would answer no
    # close frame: drop open sockets; asyncio.run then cancels every handler.
    for ws in server.connections:
        ws.transport.abort()


if __name__ == "__main__":
    args = parse_args("relay's peer protocol on asyncio + websockets.asyncio")
    asyncio.run(main(args.host, args.port, args.echo))
