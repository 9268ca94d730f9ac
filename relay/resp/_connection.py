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

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from ._protocol import Arg, ProtocolError, Reply, ReplyError, ReplyParser, encode

RECEIVE = 65536
"""Bytes asked of the socket per read."""
UNAVAILABLE_KINDS = frozenset({"LOADING", "READONLY", "MASTERDOWN"})
"""Error replies that mean the server cannot serve now (raised, not returned)."""


class RedisUnavailable(ConnectionError):
    """Redis answered, but cannot serve now (loading its data, a read-only replica)."""


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis is and how to log in (from a ``redis://``, ``rediss://``, ``unix://`` URL)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path?db=N``."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
        query = parse_qs(parts.query)
        if parts.scheme == "unix":
            db_text = query.get("db", ["0"])[0]
        else:
            db_text = query.get("db", [""])[0] or parts.path.strip("/")
        try:
            db = int(db_text or 0)
        except ValueError:
            raise ValueError("the Redis database must be a number") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is None and "password" in query:
            password = query["password"][0]
        if parts.scheme == "unix":
            return cls(path=parts.path, db=db, username=username, password=password)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            db=db,
            username=username,
            password=password,
        )

    def handshake(self) -> list[list[Arg]]:
        """The commands a new connection sends before any other."""
        commands: list[list[Arg]] = []
        if self.password is not None:
            login: list[Arg] = ["AUTH", self.password]
            if self.username:
                login.insert(1, self.username)
            commands.append(login)
        if self.db:
            commands.append(["SELECT", self.db])
        return commands


async def _open_stream(address: RedisAddress) -> trio.abc.Stream:
    if address.path is not None:
        return await trio.open_unix_socket(address.path)
    if address.tls:
        return await trio.open_ssl_over_tcp_stream(
            address.host, address.port, ssl_context=ssl.create_default_context()
        )
    stream = await trio.open_tcp_stream(address.host, address.port)
    return stream


class _Wire:
    """One open connection: a stream and its parser."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.parser = ReplyParser()

    async def read(self) -> list[Reply]:
        """The replies completed by the next bytes to arrive (at least one read)."""
        data = await self.stream.receive_some(RECEIVE)
        if not data:
            raise ConnectionError("Redis closed the connection")
        return self.parser.feed(data)

    async def call(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
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
    :meth:`execute` retries once on a fresh connection when Redis was
    unreachable (a restarted Redis leaves a dead connection behind), so a
    command may run twice: use it for commands where that is harmless.
    """

    def __init__(self, address: RedisAddress, *, timeout: float, retries: int = 1) -> None:
        self._address = address
        self._timeout = timeout
        self._retries = retries
        self._wire: _Wire | None = None
        self._busy = False

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
                    if attempt == self._retries:
                        raise
                    await trio.sleep(0.01)
            raise AssertionError("unreachable")
        finally:
            self._busy = False

    async def _once(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        try:
            with trio.fail_after(self._timeout):
                if self._wire is None:
                    self._wire = await _connect(self._address)
                return await self._wire.call(commands)
        except RedisUnavailable:
            raise  # the link itself is fine
        except BaseException as exc:
            await self._drop()
            mapped = _as_unreachable(exc)
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

    def __init__(self, wire: _Wire, early: list[Reply]) -> None:
        self._wire = wire
        self._early = early  # what arrived with the last confirmation

    async def batches(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """``(channel, data)`` of each message, as many as arrived together.

        Ends only by raising: ``ConnectionError`` when the connection is lost.
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
                replies = await self._wire.read()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _as_unreachable(exc) from exc


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
        yield Subscription(wire, early)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(wire.stream)
