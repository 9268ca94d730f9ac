"""RESP over Trio streams: a pipelined client for one task, and a subscriber.

Every call writes its commands in one ``send_all`` and reads exactly their
replies, inside one timeout; a call that fails, times out or is cancelled
midway leaves the replies out of step with the requests, so the connection
is closed and the next call opens a new one. Errors that mean "Redis cannot
be used now" are ``ConnectionError`` (refused, reset, closed, still
loading, read-only) or ``TimeoutError``, both ``OSError``: the same family
the rest of relay already treats as *unreachable*.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ._address import RedisAddress
from ._protocol import Arg, ProtocolError, Reply, ReplyError, ReplyParser, encode

RECEIVE = 65536
"""Bytes asked of the socket per read."""
IDLE = 15.0
"""Seconds of silence after which a subscription asks Redis for a ``PING`` (as coredis does)."""
UNAVAILABLE_KINDS = frozenset({"LOADING", "READONLY", "MASTERDOWN"})
"""Error replies that mean the server cannot serve now (raised, not returned)."""


class RedisUnavailable(ConnectionError):
    """Redis answered, but cannot serve now (loading its data, a read-only replica)."""


async def _open_stream(address: RedisAddress) -> trio.abc.Stream:
    if address.path is not None:
        return await trio.open_unix_socket(address.path)
    stream = await trio.open_tcp_stream(address.host, address.port)
    # The kernel's probes notice a peer that vanished without a word (a NAT
    # that dropped the mapping) on connections that wait a long time.
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if not address.tls:
        return stream
    tls = trio.SSLStream(stream, address.ssl_context(), server_hostname=address.host)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


class _Wire:
    """One open connection: a stream and its parser."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = ReplyParser()
        self.answered = False  # some bytes came back since the last call began

    async def read(self) -> list[Reply]:
        """The replies completed by the next bytes to arrive (at least one read)."""
        data = await self.stream.receive_some(RECEIVE)
        if not data:
            raise ConnectionError("Redis closed the connection")
        self.answered = True
        return self.parser.feed(data)

    async def call(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        self.answered = False
        await self.stream.send_all(encode(commands))
        replies: list[Reply] = []
        while len(replies) < len(commands):
            replies += await self.read()
        if len(replies) > len(commands):
            raise ProtocolError("Redis sent more replies than it was asked for")
        for reply in replies:
            if isinstance(reply, ReplyError) and reply.kind in UNAVAILABLE_KINDS:
                raise RedisUnavailable(str(reply))
        return replies


async def _connect(address: RedisAddress) -> _Wire:
    wire = _Wire(await _open_stream(address))
    handshake = address.handshake()
    try:
        replies = await wire.call(handshake) if handshake else []
        for reply in replies:
            if isinstance(reply, ReplyError):  # a wrong password, a database out of range
                raise RedisUnavailable(f"Redis refused the login: {reply.kind}")
    except BaseException:
        await trio.aclose_forcefully(wire.stream)
        raise
    return wire


def _as_unreachable(exc: BaseException) -> BaseException:
    if isinstance(exc, trio.TooSlowError):
        return TimeoutError("Redis did not answer in time")
    if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
        return ConnectionError(f"the connection to Redis broke: {exc!r}")
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return ConnectionError(f"cannot reach Redis: {exc}")  # e.g. every address refused
    return exc


class RespClient:
    """Pipelined commands on one connection, for one task at a time.

    The connection opens on the first call and again after one broke.
    :meth:`execute` retries once on a fresh connection only when the
    commands cannot have run: the connection could not be opened, or the
    one it had was found closed before any reply (a restarted Redis leaves
    a dead connection behind). After a timeout, a reply that Redis cannot
    serve (``LOADING``, ``READONLY``) or a cancellation it never retries:
    the commands may have run, and running a limit's script twice would
    spend its tokens twice.
    """

    def __init__(self, address: RedisAddress, *, timeout: float, retries: int = 1) -> None:
        self._address = address
        self._timeout = timeout
        self._retries = retries
        self._wire: _Wire | None = None
        self._busy = False
        self._retry_safe = False  # the last failed try cannot have run its commands

    async def execute(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        """Every command's reply, in order (an error reply as a :class:`ReplyError`).

        Raises ``ConnectionError`` or ``TimeoutError`` if Redis could not be
        reached (after the retry). Cancelled midway, the connection is
        closed; the commands may or may not have run.
        """
        if self._busy:
            raise RuntimeError("a RespClient serves one task at a time")
        self._busy = True
        try:
            for attempt in range(self._retries + 1):
                try:
                    return await self._once(commands)
                except OSError:
                    if attempt == self._retries or not self._retry_safe:
                        raise
                    await trio.sleep(0.01)
            raise AssertionError("unreachable")
        finally:
            self._busy = False

    async def _once(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        sent = False
        try:
            with trio.fail_after(self._timeout):
                if self._wire is None:
                    self._wire = await _connect(self._address)
                sent = True
                return await self._wire.call(commands)
        except BaseException as exc:
            mapped = _as_unreachable(exc)
            # Safe to send again: never sent (but not after a whole timeout), or
            # the connection was found dead before any answer came back.
            self._retry_safe = (
                not sent and not isinstance(mapped, TimeoutError | RedisUnavailable)
            ) or (
                isinstance(mapped, ConnectionError)
                and not isinstance(mapped, RedisUnavailable)
                and self._wire is not None
                and not self._wire.answered
            )
            # Whatever failed, the next call starts on a new connection (a server
            # that cannot serve now may be a demoted primary: reconnect to find out).
            await self._drop()
            if mapped is exc:  # already an OSError, or a cancellation
                raise
            raise mapped from exc

    async def _drop(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(wire.stream)

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        await self._drop()


class Subscription:
    """A connection in subscribe mode: the messages published to its channels."""

    def __init__(self, wire: _Wire, early: list[Reply], timeout: float) -> None:
        self._wire = wire
        self._early = early  # what arrived with the last confirmation
        self._timeout = timeout

    async def batches(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """``(channel, data)`` of each message, as many as arrived together.

        Ends only by raising: ``ConnectionError`` when the connection is
        lost, ``TimeoutError`` when Redis does not answer a ``PING`` sent
        after :data:`IDLE` seconds of silence (a connection dropped without
        a word, by a NAT or a balancer, would otherwise wait for ever while
        every push to this process is lost).
        """
        replies, self._early = self._early, []
        while True:
            batch = [
                (reply[1], reply[2])
                for reply in replies
                if isinstance(reply, list)
                and len(reply) == 3
                and reply[0] == b"message"
                and isinstance(reply[1], bytes)
                and isinstance(reply[2], bytes)
            ]
            if batch:
                yield batch
            try:
                replies = await self._next()
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                raise _as_unreachable(exc) from exc

    async def _next(self) -> list[Reply]:
        with trio.move_on_after(IDLE):
            return await self._wire.read()
        await self._wire.stream.send_all(encode([["PING"]]))  # silent: still there?
        with trio.fail_after(self._timeout):
            return await self._wire.read()  # the pong, or anything before it


@asynccontextmanager
async def open_subscription(
    address: RedisAddress, channels: Sequence[str], *, timeout: float
) -> AsyncIterator[Subscription]:
    """Subscribed to *channels* once this enters; closed on exit.

    Raises ``ConnectionError`` / ``TimeoutError`` if the subscription cannot
    be set up within *timeout*.
    """
    try:
        with trio.fail_after(timeout):
            wire = await _connect(address)
            try:
                await wire.stream.send_all(encode([["SUBSCRIBE", *channels]]))
                confirmed = 0
                early: list[Reply] = []
                while confirmed < len(channels):
                    for reply in await wire.read():
                        if isinstance(reply, ReplyError):
                            raise RedisUnavailable(f"Redis refused the subscription: {reply.kind}")
                        if isinstance(reply, list) and reply and reply[0] == b"subscribe":
                            confirmed += 1
                        else:  # a message published right after, in the same read
                            early.append(reply)
            except BaseException:
                await trio.aclose_forcefully(wire.stream)
                raise
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        mapped = _as_unreachable(exc)
        if mapped is exc:
            raise
        raise mapped from exc
    try:
        yield Subscription(wire, early, timeout)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(wire.stream)
