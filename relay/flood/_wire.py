"""The few bytes of WebSocket handshaking flood does by hand (sans-I/O, plus two reads).

Used by the handshake mode (for speed: no WebSocket library per attempt) and
by the start-up probe.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket

import trio

from ._http import ResponseReader, exchange
from ._target import Endpoint

BAD_TOKEN = "flood.not-a-valid.token"  # noqa: S105 (deliberately invalid, not a secret)
MAX_STATUS_LINE = 8192
PROBE_PATH = "/relay-flood-probe"


def upgrade_request(ws: Endpoint, *, token: str | None, origin: str | None, key: bytes) -> bytes:
    """The HTTP/1.1 upgrade request for *ws* (Bearer *token*, *origin*, 16-byte *key*)."""
    lines = [
        f"GET {ws.path} HTTP/1.1",
        f"Host: {ws.authority}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(key).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; ValueError if it is not one."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP status line")
    return int(parts[1])


def close_frame(mask: bytes) -> bytes:
    """A client (masked) WebSocket close frame with code 1000 and 4-byte *mask*."""
    payload = (1000).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + masked


async def read_status_line(stream: trio.SocketStream) -> bytes:
    """Read up to the end of the status line; EOFError if the peer hangs up first."""
    buf = bytearray()
    while b"\r\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise EOFError
        buf += chunk
        if len(buf) > MAX_STATUS_LINE:
            raise ValueError("status line too long")
    return bytes(buf.split(b"\r\n", 1)[0])


async def say_goodbye(stream: trio.SocketStream) -> None:
    """Send a close frame after a 101 (best effort: the server may be gone)."""
    with contextlib.suppress(OSError, trio.BrokenResourceError):
        await stream.send_all(close_frame(os.urandom(4)))


async def probe(ws: Endpoint, *, local_address: str | None, timeout: float = 5.0) -> int:
    """One handshake to :data:`PROBE_PATH` on *ws*'s server: the status it answers.

    Proves the WebSocket server is there at the cost of one handshake (one
    token of the relay's per-IP bucket); the relay answers 404 without a log
    line. A bare TCP connect or a plain GET would cost less to send but
    would each keep a server task waiting for its handshake timeout. The
    answer is parsed by h11. Raises OSError, trio.TooSlowError or
    :class:`~relay.flood._http.HttpError` when there is no answer.
    """
    reader = ResponseReader()
    key = base64.b64encode(os.urandom(16)).decode()
    request = reader.start(
        "GET",
        PROBE_PATH,
        [
            ("Host", ws.authority),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(ws.host, ws.port, local_address=local_address)
        async with stream:
            status = (await exchange(stream, reader, request)).status
            if status == 101:
                await say_goodbye(stream)
    return status


async def resolve(host: str, port: int) -> str:
    """The first address *host* resolves to (an IP literal is returned as is)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host!r} resolves to nothing")
    return str(infos[0][4][0])


async def open_stream(address: str, port: int, *, local_address: str | None) -> trio.SocketStream:
    """One TCP connection to the IP literal *address*, from *local_address* if given.

    A single socket, no name lookup and no happy-eyeballs nursery: about
    half the CPU of ``trio.open_tcp_stream`` per connection, which matters
    when the load generator shares a small machine with the server.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        if local_address is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
            await sock.bind((local_address, 0))
        await sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
