"""Hypothesis strategies for WebSocket client frames: valid, hostile and in between.

Shared by the decoder's property tests (tests/unit/ws/test_frames_properties.py)
and the socket fuzz (tests/fuzz/test_ws_frames_fuzz.py).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from relay.ws._frames import MAX_ID_LENGTH, MAX_TOKEN_LENGTH

# Every code point, lone surrogates included (they cannot be encoded as UTF-8).
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.text(any_char, max_size=200)
lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
# Text that can travel as UTF-8: what a real client can put in a field.
utf8_text = st.text(st.characters(codec="utf-8"), max_size=80)
ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_ID_LENGTH)
tokens = st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_TOKEN_LENGTH)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(utf8_text, inner, max_size=4),
    max_leaves=20,
)
bodies = json_values.filter(lambda value: value is not None)


@st.composite
def json_texts(draw: st.DrawFn, values: st.SearchStrategy[Any] = json_values) -> str:
    """A JSON document in any of the layouts a client might use."""
    return json.dumps(
        draw(values),
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Deeply nested arrays or objects, possibly inside a frame, closed or not."""
    depth = draw(st.integers(1, 5_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * draw(st.integers(0, depth))
    field = draw(st.sampled_from(["body", "to", "id", "ids", "token", "type"]))
    kind = draw(st.sampled_from(["send", "ack", "refresh", "auth", "other"]))
    return draw(st.sampled_from([inner, f'{{"type":"{kind}","id":"c1","{field}":{inner}}}']))


@st.composite
def mangled(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A JSON text with a few characters inserted, deleted or replaced."""
    text = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 2))
        text = text[:at] + draw(st.text(any_char, max_size=3)) + text[at + cut :]
    return text


huge_numbers = st.sampled_from(
    ["1" * 5_000, "-" + "9" * 400, "1e999999", "-1e-999999", "0." + "0" * 4_000 + "1"]
)


@st.composite
def frame_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """JSON objects shaped roughly like frames, most of them wrong somewhere."""
    kind = draw(st.sampled_from(["send", "ack", "refresh", "auth"]) | utf8_text | json_values)
    fields = draw(
        st.dictionaries(
            st.sampled_from(["id", "ids", "to", "device", "body", "token"]) | utf8_text,
            json_values | ids | st.lists(ids, max_size=3),
            max_size=5,
        )
    )
    return {"type": kind, **fields} if draw(st.booleans()) else fields


anything = (
    any_text
    | st.binary(max_size=200)
    | json_texts()
    | json_texts(frame_dicts())
    | mangled(json_texts(frame_dicts()))
    | nested()
    | huge_numbers
    | huge_numbers.map(lambda n: f'{{"type":"send","id":"c1","to":"bob","body":{n}}}')
    | any_text.map(lambda s: f'{{"type":"send","id":"c1","to":"bob","body":"{s}"}}')
    | any_text.map(lambda s: f'{{"type":"refresh","token":"{s}"}}')
    | st.binary(max_size=100).map(lambda b: b.decode("utf-8", "surrogateescape"))
)
