"""RESP2, sans-I/O: commands to bytes, bytes to replies.

No sockets here (the h11 / wsproto way): :func:`encode` turns commands into
what Redis reads, and a :class:`ReplyParser` is fed whatever bytes arrived
and hands back every reply they complete, in order. Replies are plain
Python values: ``bytes`` (bulk and simple strings), ``int``, ``None`` (a
null), ``list`` (arrays), and :class:`ReplyError` for an error reply, which
is returned like any other reply, not raised, so that one failed command of
a pipeline does not hide the others' answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

Arg: TypeAlias = bytes | str | int
"""A command's word: ``str`` is sent as UTF-8, ``int`` as its decimal digits."""

Reply: TypeAlias = "bytes | int | list[Reply] | ReplyError | None"

MAX_BULK = 512 * 1024 * 1024
"""Redis's own limit on a string; a longer announced length is a broken stream."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): the command failed, the link is fine."""

    @property
    def kind(self) -> str:
        """The error's first word (``ERR``, ``NOSCRIPT``, ``LOADING``...)."""
        return str(self).split(" ", 1)[0]


class ProtocolError(ConnectionError):
    """The bytes from the server are not RESP: the connection cannot be trusted any more."""


def _word(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    return str(arg).encode()


def encode(commands: Iterable[Sequence[Arg]]) -> bytes:
    """*commands* as one buffer of RESP arrays of bulk strings (one write for a pipeline)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            word = _word(arg)
            out.append(b"$%d\r\n" % len(word))
            out.append(word)
            out.append(b"\r\n")
    return b"".join(out)


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


class ReplyParser:
    """Turns a byte stream into replies; keeps what is not a whole reply yet.

    An unfinished reply is parsed again from its start on the next feed:
    linear for the replies of relay's connections (a pub/sub message is an
    array of three, a script's reply of two, an ``MGET`` at most a batch's
    routes; a long bulk string is skipped by its length), quadratic only
    for an array of many thousands of elements arriving in small reads.

    ``feed`` never blocks and never raises for a partial reply; it raises
    :class:`ProtocolError` for bytes that cannot be RESP, after which the
    parser (and its connection) must be dropped.
    """

    __slots__ = ("_buffer", "_start")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes | bytearray) -> list[Reply]:
        """Add *data*; every reply it completes, oldest first."""
        buffer = self._buffer
        buffer += data
        replies: list[Reply] = []
        while self._start < len(buffer):
            try:
                reply, end = _parse(buffer, self._start)
            except _Incomplete:
                break
            replies.append(reply)
            self._start = end
        if self._start:  # drop what was consumed (amortised: once per feed)
            del buffer[: self._start]
            self._start = 0
        return replies

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole reply yet."""
        return len(self._buffer)


def _line(buffer: bytearray, start: int) -> tuple[bytes, int]:
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    return bytes(buffer[start:end]), end + 2


def _int(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"not a number in a RESP header: {text[:40]!r}") from None


def _parse(buffer: bytearray, at: int) -> tuple[Reply, int]:
    if at >= len(buffer):
        raise _Incomplete
    kind = buffer[at]
    line, at = _line(buffer, at + 1)
    if kind == 0x24:  # $ bulk string
        size = _int(line)
        if size < 0:
            return None, at
        if size > MAX_BULK:
            raise ProtocolError(f"bulk string of {size} bytes")
        end = at + size
        if end + 2 > len(buffer):
            raise _Incomplete
        return bytes(buffer[at:end]), end + 2
    if kind == 0x3A:  # : integer
        return _int(line), at
    if kind == 0x2A:  # * array
        count = _int(line)
        if count < 0:
            return None, at
        items: list[Reply] = []
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    if kind == 0x2B:  # + simple string
        return line, at
    if kind == 0x2D:  # - error
        return ReplyError(line.decode("utf-8", "replace")), at
    raise ProtocolError(f"not a RESP reply type: {bytes([kind])!r}")
