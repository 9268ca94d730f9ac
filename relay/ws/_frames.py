"""WebSocket frame codec, sans-I/O: JSON text frames in, JSON text frames out.

Decoding is one typed msgspec decode on the happy path; only when that fails is
the frame parsed a second time, leniently, to classify the error and recover the
``id`` of a send frame so the client can match the error to its message.

Encoders return ``str`` (trio-websocket sends ``str`` as a TEXT frame).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeAlias

import msgspec

__all__ = [
    "MAX_ACK_IDS",
    "MAX_ID_LENGTH",
    "MAX_TOKEN_LENGTH",
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "FrameError",
    "RefreshFrame",
    "SendFrame",
    "accepted_frame",
    "decode_frame",
    "error_frame",
    "message_frame",
    "prekeys_low_frame",
    "ready_frame",
]

MAX_ID_LENGTH: Final = 64
MAX_TOKEN_LENGTH: Final = 4096
MAX_ACK_IDS: Final = 256

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Token = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_LENGTH)]
_Ids = Annotated[tuple[_Id, ...], msgspec.Meta(min_length=1, max_length=MAX_ACK_IDS)]


class FrameError(Exception):
    """A client frame was refused; ``code`` is stable, ``message`` is for humans.

    ``ref`` is the client's id of the refused send frame, when it was recoverable.
    The message never echoes client-supplied values (tokens in particular).
    """

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def __repr__(self) -> str:
        return f"FrameError(code={self.code!r}, message={self.message!r}, ref={self.ref!r})"


# --- client -> server -------------------------------------------------------


class SendFrame(msgspec.Struct, tag_field="type", tag="send", frozen=True, kw_only=True, gc=False):
    """Send ``body`` (raw JSON, never re-encoded) to ``to`` (optionally one device)."""

    id: _Id
    to: _Id
    device: _Id | None = None
    body: msgspec.Raw


class AckFrame(msgspec.Struct, tag_field="type", tag="ack", frozen=True, gc=False):
    """Acknowledge server message ids (the single ``id`` form becomes a 1-tuple)."""

    ids: tuple[str, ...]


class RefreshFrame(msgspec.Struct, tag_field="type", tag="refresh", frozen=True, gc=False):
    """Swap the session's access token for a fresh one."""

    token: _Token


class AuthFrame(msgspec.Struct, tag_field="type", tag="auth", frozen=True, gc=False):
    """Authenticate the connection with an access token."""

    token: _Token


ClientFrame: TypeAlias = SendFrame | AckFrame | RefreshFrame | AuthFrame


class _AckWire(msgspec.Struct, tag_field="type", tag="ack", frozen=True, gc=False):
    id: _Id | None = None
    ids: _Ids | None = None


class _Probe(msgspec.Struct, gc=False):
    """Lenient view of a refused frame, used on the error path only."""

    type: Any = None
    id: Any = None


_decoder: Final[msgspec.json.Decoder[SendFrame | _AckWire | RefreshFrame | AuthFrame]] = (
    msgspec.json.Decoder(SendFrame | _AckWire | RefreshFrame | AuthFrame)
)
_probe_decoder: Final = msgspec.json.Decoder(_Probe)
_raw_decoder: Final = msgspec.json.Decoder(msgspec.Raw)
_KNOWN_TYPES: Final = frozenset({"send", "ack", "refresh", "auth"})
_NULL: Final = msgspec.Raw(b"null")
_UNKNOWN_TYPE: Final = "frame must be a JSON object with a known `type`"


def decode_frame(data: str | bytes) -> ClientFrame:
    """Decode one client frame, or raise `FrameError`."""
    if not isinstance(data, str):
        raise FrameError("binary_frame", "binary frames are not supported; send JSON text frames")
    try:
        frame = _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
        raise _classify(data, exc) from None
    if isinstance(frame, SendFrame):
        if frame.body == _NULL:
            raise FrameError(
                "invalid_frame", "invalid send frame: `body` must not be null", frame.id
            )
        return frame
    if isinstance(frame, _AckWire):
        if frame.id is not None:
            if frame.ids is not None:
                raise FrameError("invalid_frame", "invalid ack frame: give `id` or `ids`, not both")
            return AckFrame((frame.id,))
        if frame.ids is None:
            raise FrameError("invalid_frame", "invalid ack frame: missing `id` or `ids`")
        return AckFrame(frame.ids)
    return frame


def _classify(data: str, exc: Exception) -> FrameError:
    """Turn a failed typed decode into a `FrameError` (error path only)."""
    if isinstance(exc, msgspec.ValidationError):
        try:
            probe = _probe_decoder.decode(data)
        except msgspec.ValidationError:  # not an object: is it even JSON?
            try:
                _raw_decoder.decode(data)
            except (msgspec.DecodeError, RecursionError) as raw_exc:
                exc = raw_exc
            else:
                return FrameError("unknown_type", _UNKNOWN_TYPE)
        except (msgspec.DecodeError, RecursionError) as probe_exc:
            exc = probe_exc  # malformed or too deep past the first typed error
        else:
            return _classify_object(probe, exc)
    if isinstance(exc, RecursionError):
        return FrameError("invalid_frame", "frame is nested too deeply")
    return FrameError("malformed_json", "frame is not valid JSON")


def _classify_object(probe: _Probe, exc: msgspec.ValidationError) -> FrameError:
    kind = probe.type
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES:
        return FrameError("unknown_type", _UNKNOWN_TYPE)
    ref: str | None = None
    if kind == "send" and isinstance(probe.id, str):
        if len(probe.id) > MAX_ID_LENGTH:
            return FrameError("id_too_long", f"send frame `id` exceeds {MAX_ID_LENGTH} characters")
        ref = probe.id or None
    return FrameError("invalid_frame", f"invalid {kind} frame: {_describe(exc)}", ref)


def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec's message, minus any echoed value (a quoted repr) before the path."""
    desc, sep, path = str(exc).rpartition(" - at ")
    if not sep:
        desc, path = path, ""
    if "'" in desc or '"' in desc:
        desc = "Invalid value"
    return f"{desc} - at {path}" if path else desc


# --- server -> client -------------------------------------------------------


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


class _Error(msgspec.Struct, tag_field="type", tag="error", omit_defaults=True, gc=False):
    code: str
    message: str
    ref: str | None = None


class _PrekeysLow(msgspec.Struct, tag_field="type", tag="prekeys_low", gc=False):
    count: int


_encode: Final = msgspec.json.Encoder().encode


def ready_frame(user: str, device: str, session: str) -> str:
    """``{"type":"ready","user":U,"device":D,"session":S}``"""
    return _encode(_Ready(user, device, session)).decode()


def accepted_frame(client_id: str, message_id: str) -> str:
    """``{"type":"accepted","id":C,"message_id":M}``"""
    return _encode(_Accepted(client_id, message_id)).decode()


def message_frame(
    message_id: str,
    sender: str,
    sender_device: str,
    body_raw: bytes | msgspec.Raw,
    sent_at: float,
) -> str:
    """``{"type":"message","id":M,"from":U,"from_device":D,"body":B,"sent_at":T}``.

    ``body_raw`` must be valid JSON (as stored from a decoded `SendFrame`); it is
    embedded verbatim.
    """
    msg = _Message(message_id, sender, sender_device, msgspec.Raw(body_raw), sent_at)
    return _encode(msg).decode()


def error_frame(code: str, message: str, ref: str | None = None) -> str:
    """``{"type":"error","code":E,"message":...,"ref":C}``; ``ref`` omitted when None."""
    return _encode(_Error(code, message, ref)).decode()


def prekeys_low_frame(count: int) -> str:
    """``{"type":"prekeys_low","count":N}``"""
    return _encode(_PrekeysLow(count)).decode()
