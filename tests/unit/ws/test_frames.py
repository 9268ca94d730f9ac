"""Spec for the WebSocket frame codec (sans-I/O): client frames in, server frames out."""

from __future__ import annotations

import json

import msgspec
import pytest

from relay.ws._frames import (
    AckFrame,
    AuthFrame,
    FrameError,
    RefreshFrame,
    SendFrame,
    accepted_frame,
    decode_frame,
    error_frame,
    message_frame,
    prekeys_low_frame,
    ready_frame,
)

TOKEN = "eyJhbGciOiJFZERTQSJ9.s3cr3t-t0k3n-value.c2lnbmF0dXJl"


def send(body: str = '"hi"', **fields: object) -> str:
    """A send frame with ``body`` spliced in verbatim and the other fields JSON-encoded."""
    base: dict[str, object] = {"type": "send", "id": "c1", "to": "bob"}
    base.update(fields)
    head = json.dumps(base)[:-1]
    return f'{head}, "body": {body}}}'


def refused(data: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    return info.value


# --- decoding: each frame type ---------------------------------------------------


def test_send_frame_decodes() -> None:
    """A send frame decodes to a SendFrame with its id, recipient and raw body."""
    frame = decode_frame(send('"hello"', device="phone"))
    assert isinstance(frame, SendFrame)
    assert (frame.id, frame.to, frame.device) == ("c1", "bob", "phone")
    assert bytes(frame.body) == b'"hello"'


def test_send_device_is_optional() -> None:
    """Without a device the send frame targets every device (device is None)."""
    frame = decode_frame(send())
    assert isinstance(frame, SendFrame)
    assert frame.device is None


def test_send_device_may_be_null() -> None:
    """An explicit null device means the same as an absent one."""
    frame = decode_frame(send(device=None))
    assert isinstance(frame, SendFrame)
    assert frame.device is None


def test_ack_single_id_decodes_to_one_tuple() -> None:
    """The single ``id`` form of ack is normalised to a 1-tuple of ids."""
    assert decode_frame('{"type":"ack","id":"m1"}') == AckFrame(ids=("m1",))


def test_ack_batched_ids_decode_in_order() -> None:
    """The batched ``ids`` form keeps the ids in the order given."""
    assert decode_frame('{"type":"ack","ids":["m2","m1"]}') == AckFrame(ids=("m2", "m1"))


def test_ack_accepts_256_ids() -> None:
    """A batch of exactly 256 ids is accepted."""
    ids = [f"m{i}" for i in range(256)]
    frame = decode_frame(json.dumps({"type": "ack", "ids": ids}))
    assert frame == AckFrame(ids=tuple(ids))


def test_refresh_frame_decodes() -> None:
    """A refresh frame decodes to a RefreshFrame carrying the token."""
    assert decode_frame(json.dumps({"type": "refresh", "token": TOKEN})) == RefreshFrame(TOKEN)


def test_auth_frame_decodes() -> None:
    """An auth frame decodes to an AuthFrame carrying the token."""
    assert decode_frame(json.dumps({"type": "auth", "token": TOKEN})) == AuthFrame(TOKEN)


def test_token_of_4096_chars_is_accepted() -> None:
    """Tokens up to 4096 characters are accepted."""
    token = "t" * 4096
    assert decode_frame(json.dumps({"type": "auth", "token": token})) == AuthFrame(token)


def test_unknown_fields_are_ignored() -> None:
    """Fields the protocol does not define are ignored, whatever their type."""
    frame = decode_frame(send(extra={"nested": [1, None]}, v=2))
    assert isinstance(frame, SendFrame)
    assert frame.id == "c1"
    assert decode_frame('{"type":"ack","id":"m1","extra":null}') == AckFrame(ids=("m1",))


def test_type_need_not_come_first() -> None:
    """The "type" field may appear anywhere in the object."""
    assert decode_frame('{"token":"t","type":"auth"}') == AuthFrame("t")


# --- decoding: the body is opaque raw JSON ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '"a string with \\"escapes\\" and \\u00e9"',
        '{"ct": "AAAA", "n": 1}',
        '{ "spaced" :  [ 1 , 2 ] }',
        "[1, [2, {}], []]",
        "12345678901234567890123",
        "-1.5e-300",
        "true",
        "false",
        '"ünïcødé ✓"',
    ],
)
def test_body_of_any_json_type_is_kept_byte_for_byte(body: str) -> None:
    """The body is kept as the exact raw JSON bytes the client sent."""
    frame = decode_frame(send(body))
    assert isinstance(frame, SendFrame)
    assert bytes(frame.body) == body.encode()


@pytest.mark.parametrize("body", ["null", " null "])
def test_null_body_is_refused(body: str) -> None:
    """A null body is refused as invalid, with the send id as ref."""
    error = refused(send(body))
    assert (error.code, error.ref) == ("invalid_frame", "c1")


# --- decoding: error codes ---------------------------------------------------------


def test_binary_frame_is_refused() -> None:
    """Binary frames are refused outright, even if they hold valid JSON."""
    error = refused(b'{"type":"ack","id":"m1"}')
    assert (error.code, error.ref) == ("binary_frame", None)


@pytest.mark.parametrize(
    "data",
    ["", "   ", "{", '{"type":"ack","id":"m1"', "not json", "{'type':'ack'}", '"\ud800"', "[1,]"],
)
def test_malformed_json_is_refused(data: str) -> None:
    """Text that is not JSON (or not encodable as UTF-8) is malformed_json."""
    assert refused(data).code == "malformed_json"


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        '"send"',
        "42",
        "null",
        "{}",
        '{"id":"c1","to":"bob","body":1}',
        '{"type":"shout","id":"c1"}',
        '{"type":"ready","user":"u"}',
        '{"type":"SEND","id":"c1","to":"bob","body":1}',
        '{"type":null}',
        '{"type":7}',
        '{"type":["send"]}',
    ],
)
def test_missing_or_unknown_type_is_refused(data: str) -> None:
    """A non-object, or an object without a recognised "type", is unknown_type."""
    error = refused(data)
    assert (error.code, error.ref) == ("unknown_type", None)


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"send","id":"c1","to":"bob"}',
        '{"type":"send","to":"bob","body":1}',
        '{"type":"send","id":"c1","body":1}',
        '{"type":"send","id":7,"to":"bob","body":1}',
        '{"type":"send","id":"","to":"bob","body":1}',
        '{"type":"send","id":"c1","to":"","body":1}',
        '{"type":"send","id":"c1","to":["bob"],"body":1}',
        '{"type":"send","id":"c1","to":"bob","device":5,"body":1}',
        '{"type":"send","id":"c1","to":"bob","device":"","body":1}',
        '{"type":"ack"}',
        '{"type":"ack","id":null}',
        '{"type":"ack","id":7}',
        '{"type":"ack","id":""}',
        '{"type":"ack","id":"m1","ids":["m2"]}',
        '{"type":"ack","ids":"m1"}',
        '{"type":"ack","ids":[1]}',
        '{"type":"ack","ids":["m1",""]}',
        '{"type":"refresh"}',
        '{"type":"refresh","token":""}',
        '{"type":"auth","token":null}',
        '{"type":"auth","token":{"t":1}}',
    ],
)
def test_wrong_types_and_missing_fields_are_invalid(data: str) -> None:
    """Wrong field types, empty strings and missing fields are invalid_frame."""
    assert refused(data).code == "invalid_frame"


@pytest.mark.parametrize(
    "data",
    [
        send(to="b" * 65),
        send(device="d" * 65),
        json.dumps({"type": "ack", "id": "m" * 65}),
        json.dumps({"type": "ack", "ids": ["m" * 65]}),
        json.dumps({"type": "auth", "token": "t" * 4097}),
        json.dumps({"type": "refresh", "token": "t" * 4097}),
    ],
)
def test_over_long_strings_are_invalid(data: str) -> None:
    """Strings over their limit (other than a send id) are invalid_frame."""
    assert refused(data).code == "invalid_frame"


def test_empty_ack_ids_is_refused() -> None:
    """An empty ``ids`` batch is invalid."""
    assert refused('{"type":"ack","ids":[]}').code == "invalid_frame"


def test_more_than_256_ack_ids_is_refused() -> None:
    """A batch of 257 ids is invalid."""
    data = json.dumps({"type": "ack", "ids": [f"m{i}" for i in range(257)]})
    assert refused(data).code == "invalid_frame"


def test_send_id_of_64_chars_is_accepted() -> None:
    """A send id of exactly 64 characters (code points, not bytes) is accepted."""
    for client_id in ("c" * 64, "é" * 64):
        frame = decode_frame(send(id=client_id))
        assert isinstance(frame, SendFrame)
        assert frame.id == client_id


def test_send_id_of_65_chars_is_id_too_long() -> None:
    """A send id over 64 characters is id_too_long (not invalid_frame), without a ref."""
    error = refused(send(id="c" * 65))
    assert (error.code, error.ref) == ("id_too_long", None)


def test_id_too_long_wins_over_other_faults() -> None:
    """An over-long send id is reported as such even if other fields are also wrong."""
    assert refused(json.dumps({"type": "send", "id": "c" * 65})).code == "id_too_long"


def test_deeply_nested_body_is_refused() -> None:
    """A body nested beyond the decoder's depth limit is invalid, not a crash."""
    assert refused(send("[" * 100_000 + "]" * 100_000)).code == "invalid_frame"


# --- decoding: ref recovery ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"send","id":"c1","body":1}',
        '{"type":"send","id":"c1","to":7,"body":1}',
        '{"type":"send","id":"c1","to":"bob"}',
        '{"body":1,"to":"bob","device":"","id":"c1","type":"send"}',
        send("null"),
    ],
)
def test_ref_is_recovered_from_invalid_send_frames(data: str) -> None:
    """An invalid send frame's error carries its id as ref, so the client can match it."""
    error = refused(data)
    assert (error.code, error.ref) == ("invalid_frame", "c1")


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"send","id":7,"to":"bob","body":1}',
        '{"type":"send","id":"","to":"bob","body":1}',
        '{"type":"ack","id":"m1","ids":["m1"]}',
        '{"type":"ack","id":7}',
        '{"type":"auth","id":"c1"}',
    ],
)
def test_no_ref_when_no_usable_send_id(data: str) -> None:
    """Without a usable string send id (or for other frame types) ref is None."""
    assert refused(data).ref is None


# --- decoding: error messages --------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({"type": "auth", "token": TOKEN + "x" * 4096}),
        json.dumps({"type": "refresh", "token": TOKEN + "x" * 4096}),
        json.dumps({"type": "auth", "token": TOKEN, "extra": 1, "token2": TOKEN})[:-1],
        json.dumps({"type": TOKEN, "token": TOKEN}),
        json.dumps({"type": "auth", "token": TOKEN, "type ": 1})[:-2],
        f'{{"type":"auth","token":"ok","type":"{TOKEN}"}}',
        f'{{"type":"{TOKEN}","token":"ok","type":"auth"}}',
        f'{{"type":"{TOKEN}\'q","token":"ok","type":"auth"}}',
        json.dumps({"type": "send", "id": "c1", "to": TOKEN, "body": 1}).replace('"c1"', "1"),
    ],
)
def test_error_messages_never_echo_token_values(data: str) -> None:
    """Whatever the fault, the error message does not contain client-supplied secrets."""
    error = refused(data)
    assert "s3cr3t" not in error.message
    assert "s3cr3t" not in str(error)
    assert "s3cr3t" not in repr(error)


def test_invalid_frame_message_names_the_field() -> None:
    """The invalid_frame message is human-readable and points at the faulty field."""
    message = refused('{"type":"send","id":"c1","to":7,"body":1}').message
    assert "send" in message
    assert "$.to" in message


def test_frame_error_exposes_code_message_and_ref() -> None:
    """FrameError carries code, message and ref, and str() is the message."""
    error = FrameError("invalid_frame", "nope", "c1")
    assert (error.code, error.message, error.ref, str(error)) == (
        "invalid_frame",
        "nope",
        "c1",
        "nope",
    )


# --- encoding ------------------------------------------------------------------------


def test_ready_frame() -> None:
    """ready_frame encodes the documented object."""
    out = ready_frame("alice", "phone", "s-1")
    assert isinstance(out, str)
    assert json.loads(out) == {
        "type": "ready",
        "user": "alice",
        "device": "phone",
        "session": "s-1",
    }


def test_accepted_frame() -> None:
    """accepted_frame pairs the client's id with the server's message id."""
    out = accepted_frame("c1", "m1")
    assert json.loads(out) == {"type": "accepted", "id": "c1", "message_id": "m1"}


def test_message_frame() -> None:
    """message_frame encodes the documented object with sent_at as a number."""
    out = message_frame("m1", "alice", "phone", b'{"ct":"AAAA","n":1}', 1700000000.25)
    assert json.loads(out) == {
        "type": "message",
        "id": "m1",
        "from": "alice",
        "from_device": "phone",
        "body": {"ct": "AAAA", "n": 1},
        "sent_at": 1700000000.25,
    }


@pytest.mark.parametrize(
    "body",
    [b'{"ct":"AAAA","n":1}', b'{ "spaced" : [1, 2.50] }', b'"\\u00e9\\n"', b"[]", b"0", b"false"],
)
def test_message_frame_embeds_body_verbatim(body: bytes) -> None:
    """The body bytes appear verbatim in the output, never re-encoded."""
    out = message_frame("m1", "alice", "phone", body, 1.0)
    assert f'"body":{body.decode()},'.encode() in out.encode()


def test_message_frame_accepts_a_decoded_raw_body() -> None:
    """A SendFrame's raw body can be relayed straight into message_frame."""
    frame = decode_frame(send('{"ct":"AAAA","n":1}'))
    assert isinstance(frame, SendFrame)
    out = message_frame("m1", "alice", "phone", frame.body, 1.0)
    assert '"body":{"ct":"AAAA","n":1},' in out


def test_encoders_handle_unicode() -> None:
    """Non-ASCII strings survive encoding and parse back unchanged."""
    out = message_frame("m1", "ålice ✓", "téléphone", '"日本語"'.encode(), 2.0)
    parsed = json.loads(out)
    assert (parsed["from"], parsed["from_device"], parsed["body"]) == (
        "ålice ✓",
        "téléphone",
        "日本語",
    )
    assert json.loads(ready_frame("ünï", "dév", "s"))["user"] == "ünï"


def test_error_frame_with_ref() -> None:
    """error_frame includes ref when given."""
    out = error_frame("invalid_frame", 'bad "to"', "c1")
    assert json.loads(out) == {
        "type": "error",
        "code": "invalid_frame",
        "message": 'bad "to"',
        "ref": "c1",
    }


def test_error_frame_omits_ref_when_none() -> None:
    """error_frame omits the ref key entirely when ref is None."""
    out = error_frame("malformed_json", "frame is not valid JSON")
    assert json.loads(out) == {
        "type": "error",
        "code": "malformed_json",
        "message": "frame is not valid JSON",
    }


def test_error_frame_from_frame_error() -> None:
    """A FrameError maps directly onto an error frame."""
    error = refused('{"type":"send","id":"c1","body":1}')
    parsed = json.loads(error_frame(error.code, error.message, error.ref))
    assert (parsed["code"], parsed["ref"]) == ("invalid_frame", "c1")


def test_prekeys_low_frame() -> None:
    """prekeys_low_frame reports the remaining one-time prekey count."""
    assert json.loads(prekeys_low_frame(3)) == {"type": "prekeys_low", "count": 3}


def test_encoded_frames_start_with_type() -> None:
    """The "type" key comes first, so clients can dispatch on a prefix."""
    for out in (
        ready_frame("u", "d", "s"),
        accepted_frame("c", "m"),
        message_frame("m", "u", "d", b"1", 1.0),
        error_frame("e", "m"),
        prekeys_low_frame(0),
    ):
        assert out.startswith('{"type":"')


def test_raw_body_type_is_msgspec_raw() -> None:
    """SendFrame.body is a msgspec.Raw, so it can be re-embedded without re-encoding."""
    frame = decode_frame(send("[1]"))
    assert isinstance(frame, SendFrame)
    assert isinstance(frame.body, msgspec.Raw)
