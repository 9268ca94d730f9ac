"""What the Python peers share: arguments, the peer protocol's frames, a user registry.

Every Python peer uses this same codec (msgspec, as relay does), so the peers
differ only in their WebSocket framework. See README.md for the protocol.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import time
from collections.abc import Iterable
from typing import Final, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec

T = TypeVar("T")


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--echo", action="store_true", help="echo every message back instead")
    args = parser.parse_args()
    if args.host != "localhost" and not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host must be a loopback address, not {args.host}")
    return args


def announce(port: int) -> None:
    print(f"LISTENING {port}", flush=True)


# --- client -> server ----------------------------------------------------------


class Send(msgspec.Struct, tag_field="type", tag="send", frozen=True, gc=False):
    id: str
    to: str
    body: msgspec.Raw  # the sender's exact JSON text, embedded verbatim


class Ack(msgspec.Struct, tag_field="type", tag="ack", frozen=True, gc=False):
    pass  # every field is ignored


# --- server -> client ----------------------------------------------------------


class _Ready(msgspec.Struct, tag_field="type", tag="ready", gc=False):
    user: str
    device: str
    session: str


class _Accepted(msgspec.Struct, tag_field="type", tag="accepted", gc=False):
    id: str
    message_id: str


class _Message(msgspec.Struct, tag_field="type", tag="message", gc=False):
    id: str
    from_: str = msgspec.field(name="from")
    from_device: str
    body: msgspec.Raw
    sent_at: float


class _Error(msgspec.Struct, tag_field="type", tag="error", gc=False):
    code: str
    message: str


_decode: Final = msgspec.json.Decoder(Send | Ack).decode
_encode: Final = msgspec.json.Encoder().encode
_NULL: Final = msgspec.Raw(b"null")
_connections = itertools.count(1)
_messages = itertools.count(1)


def _error(message: str) -> str:
    return _encode(_Error("invalid_frame", message)).decode()


class Peer:
    """One connection's identity and its frame handling (framework-agnostic)."""

    __slots__ = ("device", "session", "user")

    def __init__(self, path: str) -> None:
        query = parse_qs(urlsplit(path).query)
        names = query.get("user") or query.get("access_token") or ["anonymous"]
        n = next(_connections)
        self.user, self.device, self.session = names[0], f"d-{n}", f"s-{n}"

    def ready(self) -> str:
        return _encode(_Ready(self.user, self.device, self.session)).decode()

    def on_frame(self, data: str | bytes) -> tuple[str | None, str, str | None]:
        """Handle one client frame: (answer to the sender, recipient user, message frame)."""
        if not isinstance(data, str):
            return _error("binary frames are not supported"), "", None
        try:
            frame = _decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:  # incl. ValidationError
            return _error(f"frame must be a send or ack object: {exc}"), "", None
        if isinstance(frame, Ack):
            return None, "", None
        if frame.body == _NULL:
            return _error("`body` must not be null"), "", None
        message_id = str(next(_messages))
        message = _Message(message_id, self.user, self.device, frame.body, time.time())
        accepted = _Accepted(frame.id, message_id)
        return _encode(accepted).decode(), frame.to, _encode(message).decode()


class Registry(Generic[T]):
    """The open connections (any handle type T) of each user."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[T]] = {}

    def add(self, user: str, conn: T) -> None:
        self._by_user.setdefault(user, set()).add(conn)

    def remove(self, user: str, conn: T) -> None:
        conns = self._by_user.get(user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[user]

    def of(self, user: str) -> Iterable[T]:
        return self._by_user.get(user, ())
