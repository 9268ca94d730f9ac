"""Listening sockets, with SO_REUSEPORT when several processes share a port."""

from __future__ import annotations

import errno
import socket

import trio

BACKLOG = 1024


class PortInUse(OSError):
    """The port of one of relay's servers is taken (by another process, or relay)."""

    def __init__(self, server: str, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"{host}:{port} is in use")
        self.server, self.host, self.port = server, host, port


async def open_listeners(
    host: str, port: int, *, reuse_port: bool = False, server: str = "server"
) -> list[trio.SocketListener]:
    """Listeners on every address *host* resolves to (as ``trio.open_tcp_listeners``).

    With *reuse_port*, each socket sets ``SO_REUSEPORT`` before binding, so
    that several relay processes can listen on the same port and the kernel
    spreads new connections across them. Port 0 with *reuse_port* binds an
    ephemeral port per socket, as usual. A taken port raises
    :class:`PortInUse` naming *server* (``http``, ``ws``, ``admin``).
    """
    try:
        return await _open(host, port, reuse_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(server, host, port) from None
        raise


async def _open(host: str, port: int, reuse_port: bool) -> list[trio.SocketListener]:
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
    listeners: list[trio.SocketListener] = []
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
