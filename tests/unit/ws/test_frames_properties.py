"""Properties of the frame decoder: total on any input, faithful on valid frames."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, event, given
from hypothesis import strategies as st

from relay.ws._frames import (
    MAX_ACK_IDS,
    MAX_ID_LENGTH,
    MAX_TOKEN_LENGTH,
    AckFrame,
    AuthFrame,
    FrameError,
    RefreshFrame,
    SendFrame,
    decode_frame,
)
from tests.frame_strategies import (
    any_text,
    anything,
    bodies,
    ids,
    json_texts,
    json_values,
    lone_surrogates,
    tokens,
    utf8_text,
)

CODES = {"malformed_json", "binary_frame", "unknown_type", "invalid_frame", "id_too_long"}

# --- helpers ------------------------------------------------------------------------


def frame_text(fields: dict[str, Any], body: str, *, ensure_ascii: bool) -> str:
    """*fields* (not empty) as a JSON object, with a ``body`` spliced in verbatim."""
    return f'{json.dumps(fields, ensure_ascii=ensure_ascii)[:-1]}, "body": {body}}}'


@st.composite
def shuffled(draw: st.DrawFn, fields: dict[str, Any]) -> dict[str, Any]:
    """The same fields in another order, plus some the protocol does not know."""
    extra = draw(st.dictionaries(st.sampled_from(["x", "v", "meta", "_"]), json_values, max_size=2))
    items = draw(st.permutations(list({**extra, **fields}.items())))
    return dict(items)


# --- totality -----------------------------------------------------------------------


@given(anything)
def test_any_input_decodes_to_a_frame_or_raises_frame_error(data: str | bytes) -> None:
    """Whatever arrives (text, bytes, nesting, huge numbers, surrogates), no other exception."""
    try:
        frame = decode_frame(data)
    except FrameError as exc:
        event(f"{exc.code}: {exc.message}"[:40])  # --hypothesis-show-statistics shows the mix
        assert exc.code in CODES
    else:
        event(type(frame).__name__)
        assert isinstance(frame, SendFrame | AckFrame | RefreshFrame | AuthFrame)


@given(st.binary(max_size=300))
def test_binary_frames_are_refused_whatever_they_hold(data: bytes) -> None:
    """Bytes, even valid UTF-8 JSON, are always refused as binary_frame."""
    try:
        decode_frame(data)
    except FrameError as exc:
        assert (exc.code, exc.ref) == ("binary_frame", None)
    else:
        raise AssertionError("a binary frame was decoded")


@given(st.tuples(anything.filter(lambda d: isinstance(d, str)), lone_surrogates, any_text))
def test_text_with_lone_surrogates_is_malformed(parts: tuple[str, str, str]) -> None:
    """A str that cannot be encoded as UTF-8 is malformed_json, not a crash."""
    head, surrogate, tail = parts
    cut = len(head) // 2
    try:
        decode_frame(head[:cut] + surrogate + head[cut:] + tail)
    except FrameError as exc:
        assert exc.code == "malformed_json"
    else:
        raise AssertionError("a frame with a lone surrogate was decoded")


# --- round trips --------------------------------------------------------------------


@given(
    st.data(),
    ids,
    ids,
    st.none() | ids,
    json_texts(bodies),
    st.booleans(),
)
def test_valid_send_frames_round_trip(
    data: st.DataObject,
    client_id: str,
    to: str,
    device: str | None,
    body: str,
    ensure_ascii: bool,
) -> None:
    """id, to and device are preserved, and body is the exact JSON text sent."""
    fields: dict[str, Any] = {"type": "send", "id": client_id, "to": to}
    if device is not None or data.draw(st.booleans()):
        fields["device"] = device
    frame = decode_frame(frame_text(data.draw(shuffled(fields)), body, ensure_ascii=ensure_ascii))
    assert isinstance(frame, SendFrame)
    assert (frame.id, frame.to, frame.device) == (client_id, to, device)
    assert bytes(frame.body) == body.encode()


@given(st.data(), ids)
def test_valid_single_ack_round_trips(data: st.DataObject, message_id: str) -> None:
    """An ack with one id decodes to that id alone."""
    fields = data.draw(shuffled({"type": "ack", "id": message_id}))
    assert decode_frame(json.dumps(fields)) == AckFrame((message_id,))


@given(st.data(), st.lists(ids, min_size=1, max_size=MAX_ACK_IDS))
def test_valid_batched_ack_round_trips(data: st.DataObject, message_ids: list[str]) -> None:
    """An ack with ids keeps every id, in order, duplicates included."""
    fields = data.draw(shuffled({"type": "ack", "ids": message_ids}))
    assert decode_frame(json.dumps(fields)) == AckFrame(tuple(message_ids))


@given(st.data(), st.sampled_from([RefreshFrame, AuthFrame]), tokens)
def test_valid_token_frames_round_trip(
    data: st.DataObject, kind: type[RefreshFrame | AuthFrame], token: str
) -> None:
    """refresh and auth frames carry their token unchanged."""
    tag = "refresh" if kind is RefreshFrame else "auth"
    fields = data.draw(shuffled({"type": tag, "token": token}))
    assert decode_frame(json.dumps(fields)) == kind(token)


# --- refusals -----------------------------------------------------------------------

# One thing wrong with an otherwise valid send frame (the id itself is fine).
send_faults = st.sampled_from(
    [
        ("to", None),
        ("to", ""),
        ("to", "b" * (MAX_ID_LENGTH + 1)),
        ("to", 5),
        ("to", ["bob"]),
        ("device", ""),
        ("device", 7),
        ("device", "d" * (MAX_ID_LENGTH + 1)),
        ("body", None),
        ("body", "MISSING"),
        ("to", "MISSING"),
    ]
)


@given(st.data(), st.text(st.characters(codec="utf-8"), max_size=2 * MAX_ID_LENGTH), send_faults)
def test_refused_send_carries_its_id_as_ref_when_recoverable(
    data: st.DataObject, client_id: str, fault: tuple[str, Any]
) -> None:
    """A bad send is refused with its own id as ref; an over-long id is id_too_long, no ref."""
    fields: dict[str, Any] = {"type": "send", "id": client_id, "to": "bob", "body": "hi"}
    name, value = fault
    if value == "MISSING":
        del fields[name]
    else:
        fields[name] = value
    try:
        decode_frame(json.dumps(data.draw(shuffled(fields))))
    except FrameError as exc:
        if len(client_id) > MAX_ID_LENGTH:
            assert (exc.code, exc.ref) == ("id_too_long", None)
        else:
            assert exc.code == "invalid_frame"
            assert exc.ref == (client_id or None)
    else:
        raise AssertionError("a faulty send frame was decoded")


@given(st.data(), json_values.filter(lambda v: not isinstance(v, str)))
def test_send_without_a_string_id_has_no_ref(data: st.DataObject, client_id: Any) -> None:
    """A send whose id is not a string is refused without a ref."""
    fields = data.draw(shuffled({"type": "send", "id": client_id, "to": "bob", "body": 1}))
    try:
        decode_frame(json.dumps(fields))
    except FrameError as exc:
        assert (exc.code, exc.ref) == ("invalid_frame", None)
    else:
        raise AssertionError("a send without a string id was decoded")


# A value that must never come back in an error message.
secrets = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=12
).map(lambda s: f"tok_{s}")


@st.composite
def frames_leaking(draw: st.DrawFn, secret: str) -> str:
    """A refused frame that has *secret* somewhere in a client-supplied value."""
    long_secret = (secret * (MAX_TOKEN_LENGTH // len(secret) + 2))[: MAX_TOKEN_LENGTH + 1]
    place = draw(
        st.sampled_from(
            [
                {"type": "refresh", "token": long_secret},
                {"type": "auth", "token": long_secret},
                {"type": "refresh", "token": [secret]},
                {"type": "auth", "token": {secret: secret}},
                {"type": "refresh", "token": 1, secret: secret},
                {"type": secret, "token": secret},
                {"type": "send", "id": "c1", "to": secret * 8, "body": secret},
                {"type": "send", "id": "c1", "to": "bob", "device": [secret]},
                {"type": "ack", "ids": [secret * 8]},
                {"type": "ack", "id": secret, "ids": [secret]},
                {"type": "ack", "ids": [secret] * (MAX_ACK_IDS + 1)},
            ]
        )
    )
    return json.dumps(place)


@given(st.data(), secrets)
def test_error_messages_never_echo_client_values(data: st.DataObject, secret: str) -> None:
    """A refused frame's message never contains a token or other client-supplied value."""
    try:
        decode_frame(data.draw(frames_leaking(secret)))
    except FrameError as exc:
        assert secret[:12] not in exc.message
        assert exc.ref is None or exc.ref == "c1"
    else:
        raise AssertionError("a faulty frame was decoded")


@given(st.data(), secrets)
def test_over_long_send_ids_are_never_echoed(data: st.DataObject, secret: str) -> None:
    """An id too long to be a ref appears neither as ref nor in the message."""
    client_id = (secret * 10)[: MAX_ID_LENGTH + data.draw(st.integers(1, 100))]
    fields = data.draw(shuffled({"type": "send", "id": client_id, "to": 1, "body": "x"}))
    try:
        decode_frame(json.dumps(fields))
    except FrameError as exc:
        assert (exc.code, exc.ref) == ("id_too_long", None)
        assert secret[:12] not in exc.message
    else:
        raise AssertionError("a send with an over-long id was decoded")


@given(utf8_text)
def test_unknown_types_are_refused_as_unknown_type(kind: str) -> None:
    """Any type but send, ack, refresh and auth is unknown_type."""
    assume(kind not in {"send", "ack", "refresh", "auth"})
    try:
        decode_frame(json.dumps({"type": kind, "id": "c1", "token": "t"}))
    except FrameError as exc:
        assert (exc.code, exc.ref) == ("unknown_type", None)
    else:
        raise AssertionError("a frame of unknown type was decoded")
