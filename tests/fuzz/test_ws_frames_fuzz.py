"""Hypothesis frames over a real authenticated WebSocket: answered as docs/protocol.md says.

Each example opens FUZZER's socket and PEER's, sends a list of frames on
FUZZER's, and after each frame a *probe* (a send to a user that does not
exist: always answered, never stored, never counted as a bad frame), so
that everything that arrives before the probe's answer is the answer to
that frame. The local decoder says what the answer must be. Then PEER's
socket, open all along, must still answer its own probe.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import trio
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from relay.ws._frames import AckFrame, AuthFrame, FrameError, RefreshFrame, SendFrame, decode_frame
from tests.frame_strategies import anything, bodies, ids, json_texts, tokens
from tests.fuzz.conftest import EXAMPLES, FUZZER, PEER, Tally, Target

MAX_FRAME = 65_536  # ws.max_frame_bytes, in characters of the decoded text
BAD_FRAME_LIMIT = 10  # ws.bad_frame_limit
DEEP = 200  # past this nesting the verdict depends on the stack depth at the decoder
NOBODY = "nobody.here"  # no such user: a send to it is answered unknown_recipient
# Refusals that draw from the bad-frame budget (docs/protocol.md §5, "counts").
COUNTED = {
    "malformed_json",
    "binary_frame",
    "unknown_type",
    "invalid_frame",
    "id_too_long",
    "already_authenticated",
    "invalid_token",
}
# What a valid send may be answered, besides accepted (§5).
SEND_ERRORS = {
    "rate_limited",
    "unknown_recipient",
    "unknown_device",
    "no_devices",
    "queue_full",
    "store_unavailable",
}

recipients = st.sampled_from([PEER, FUZZER, NOBODY]) | ids
valid_sends = st.builds(
    lambda client_id, to, device, body: (
        f"{json.dumps({'type': 'send', 'id': client_id, 'to': to, 'device': device})[:-1]}, "
        f'"body": {body}}}'
    ),
    ids,
    recipients,
    st.none() | ids,
    json_texts(bodies),
)
valid_frames = (
    valid_sends
    | st.builds(lambda i: json.dumps({"type": "ack", "id": i}), ids)
    | st.builds(lambda i: json.dumps({"type": "ack", "ids": i}), st.lists(ids, min_size=1))
    | st.builds(lambda t: json.dumps({"type": "refresh", "token": t}), tokens)
    | st.builds(lambda t: json.dumps({"type": "auth", "token": t}), tokens)
)
# What a client can put on the wire: text must be encodable (lone surrogates are not).
sendable = anything.map(
    lambda d: d if isinstance(d, bytes) else d.encode("utf-8", "replace").decode("utf-8")
)
too_big = st.integers(MAX_FRAME + 1, MAX_FRAME + 100).map(
    lambda n: json.dumps({"type": "send", "id": "big", "to": PEER, "body": "x" * n})
)
# One frame in twenty too big (it ends the connection, so the rest would go unsent).
one_frame = st.integers(0, 19).flatmap(lambda n: too_big if n == 0 else sendable | valid_frames)
frames = st.lists(one_frame, min_size=1, max_size=14)


@dataclass
class Exchange:
    """What FUZZER's socket has seen so far in one example."""

    counted: int = 0  # refusals drawn from the bad-frame budget
    closed: int | None = None  # the close code, once closed
    log: list[Any] = field(default_factory=list)  # (frame sent, answers) for failure reports


async def probe(ws: WebSocketConnection, also: str | None = None) -> list[dict[str, Any]]:
    """Send a probe; every frame up to its answer (and *also*'s answer, if given)."""
    probe_id = f"probe-{uuid.uuid4().hex}"
    await ws.send_message(json.dumps({"type": "send", "id": probe_id, "to": NOBODY, "body": 0}))
    waiting = {probe_id} | ({also} if also else set())
    answers: list[dict[str, Any]] = []
    while waiting:
        frame = json.loads(await ws.get_message())
        if frame.get("type") == "message":  # FUZZER sent to itself or PEER: ack, move on
            await ws.send_message(json.dumps({"type": "ack", "id": frame["id"]}))
            continue
        key = frame.get("ref", frame.get("id"))
        if key == probe_id:
            assert frame["type"] == "error", frame  # unknown_recipient or rate_limited
            waiting.discard(probe_id)
            continue
        answers.append(frame)
        waiting.discard(key)
    return answers


def nesting(data: str | bytes) -> int:
    """How deeply *data* nests arrays and objects (strings skipped)."""
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def expected(data: str | bytes) -> tuple[str, Any]:
    """What the relay must answer to *data* alone: the local decoder's verdict."""
    if len(data) > MAX_FRAME:
        return "too_big", None
    if nesting(data) > DEEP:
        return "deep", None
    try:
        frame = decode_frame(data)
    except FrameError as exc:
        return "refused", exc
    return "accepted", frame


async def send_one(
    ws: WebSocketConnection, data: str | bytes, seen: Exchange, tally: Tally
) -> None:
    """Send *data* and check the answer (or the close) against docs/protocol.md."""
    verdict, detail = expected(data)
    event(verdict)
    answers: list[dict[str, Any]] = []
    try:
        await ws.send_message(data)
        also = detail.id if isinstance(detail, SendFrame) else None
        answers = await probe(ws, also)
    except ConnectionClosed as exc:
        seen.closed = int(exc.reason.code) if exc.reason else None
    seen.log.append((data[:200], answers, seen.closed))
    tally.frames[f"closed {seen.closed}" if seen.closed else "answered"] += 1
    if seen.closed is not None:
        event(f"closed {seen.closed}")
        assert seen.closed != 1011, seen.log
        if verdict == "too_big":
            assert seen.closed == 1009, seen.log
        else:
            # The refusal that finds the budget empty gets its error, then 1008.
            assert seen.closed == 1008, seen.log
            assert seen.counted + 1 > BAD_FRAME_LIMIT, seen.log
        return
    assert verdict != "too_big", seen.log
    if verdict == "deep":
        # Accepted, or refused as malformed or nested too deeply: where the
        # decoder runs out of stack depends on the caller's own depth (reported).
        assert len(answers) <= 1, seen.log
        assert all(a["type"] == "accepted" or a["code"] in COUNTED | SEND_ERRORS for a in answers)
    elif verdict == "refused":
        assert answers == [
            {"type": "error", "code": detail.code, "message": detail.message}
            | ({"ref": detail.ref} if detail.ref else {})
        ], seen.log
    elif isinstance(detail, SendFrame):
        (answer,) = answers
        assert answer.get("ref", answer.get("id")) == detail.id, seen.log
        assert answer["type"] == "accepted" or answer["code"] in SEND_ERRORS, seen.log
    elif isinstance(detail, AckFrame):
        assert answers == [], seen.log
    else:
        code = "already_authenticated" if isinstance(detail, AuthFrame) else "invalid_token"
        assert isinstance(detail, AuthFrame | RefreshFrame)
        assert [(a["type"], a["code"]) for a in answers] == [("error", code)], seen.log
    seen.counted += sum(1 for a in answers if a.get("code") in COUNTED)


async def fuzz_one_connection(target: Target, data: list[str | bytes]) -> None:
    fuzzer = [("Authorization", f"Bearer {target.primary.access_token()}")]
    peer = [("Authorization", f"Bearer {target.peer.access_token()}")]
    with trio.fail_after(30):
        async with (
            open_websocket_url(target.ws_url, extra_headers=peer) as other,
            open_websocket_url(target.ws_url, extra_headers=fuzzer) as ws,
        ):
            for socket in (other, ws):
                assert json.loads(await socket.get_message())["type"] == "ready"
            seen = Exchange()
            for one in data:
                await send_one(ws, one, seen, target.tally)
                if seen.closed is not None:
                    break
            # The other user's socket, open all along, still works.
            assert await probe(other) == []


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames)
def test_every_frame_is_answered_as_documented_and_others_keep_working(
    ws_target: Target, data: list[str | bytes]
) -> None:
    """Each frame gets its answer, or 1008/1009 as documented, never 1011; PEER is unaffected."""
    trio.run(fuzz_one_connection, ws_target, data)
    assert ws_target.internal_errors() == []
