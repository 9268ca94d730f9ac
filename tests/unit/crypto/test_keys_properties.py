"""Properties of key-upload parsing: total on any bytes, exact on every single fault."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from relay.crypto import BadKey, parse_key_upload
from relay.store import KeyUpload
from tests.keyhelpers import b64

CAP = 100
MAX_KEY_ID = 2**31 - 1
CODES = {
    "malformed_json",
    "invalid_json",
    "invalid_request",
    "too_many_prekeys",
    "bad_base64",
    "bad_key_length",
    "duplicate_key_id",
    "bad_signature",
}

seeds = st.binary(min_size=32, max_size=32)
key_ids = st.integers(0, MAX_KEY_ID)


@dataclass(frozen=True)
class Upload:
    """A valid upload body and the raw values it encodes."""

    body: dict[str, Any]
    identity_key: bytes
    signed: tuple[int, bytes, bytes]  # key id, public key, signature
    one_time: list[tuple[int, bytes]]


@st.composite
def uploads(draw: st.DrawFn, max_one_time: int = 8) -> Upload:
    """A valid upload made with real Ed25519 and X25519 keys (from drawn seeds)."""
    identity = SigningKey(draw(seeds))
    spk_id = draw(key_ids)
    spk = bytes(PrivateKey(draw(seeds)).public_key)
    signature = identity.sign(spk).signature
    ids = draw(st.lists(key_ids, unique=True, max_size=max_one_time))
    one_time = [(key_id, bytes(PrivateKey(draw(seeds)).public_key)) for key_id in ids]
    body = {
        "identity_key": b64(bytes(identity.verify_key)),
        "signed_prekey": {"key_id": spk_id, "public_key": b64(spk), "signature": b64(signature)},
        "one_time_prekeys": [{"key_id": i, "public_key": b64(pub)} for i, pub in one_time],
    }
    return Upload(body, bytes(identity.verify_key), (spk_id, spk, signature), one_time)


def encoded(body: object) -> bytes:
    return json.dumps(body).encode()


def refused(data: bytes) -> BadKey:
    try:
        parse_key_upload(data, CAP)
    except BadKey as exc:
        return exc
    raise AssertionError("the upload was accepted")


# --- any bytes ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Deep nesting, alone or as the value of one field, closed or not."""
    depth = draw(st.integers(1, 5_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" + closer * draw(st.integers(0, depth))
    field = draw(st.sampled_from([b"identity_key", b"signed_prekey", b"one_time_prekeys", b"x"]))
    return draw(st.sampled_from([inner, b'{"' + field + b'":' + inner + b"}"]))


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid upload with a few bytes inserted, deleted or replaced."""
    data = encoded(draw(uploads(max_one_time=2)).body)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 2))
        data = data[:at] + draw(st.binary(max_size=3)) + data[at + cut :]
    return data


any_bytes = (
    st.binary(max_size=300)
    | json_values.map(encoded)
    | nested()
    | mangled()
    | st.sampled_from([b"1" * 5_000, b"1e999999", b'{"identity_key":' + b"9" * 5_000 + b"}"])
    | st.text().map(lambda s: s.encode("utf-8", "surrogatepass"))
)


@given(any_bytes)
def test_any_bytes_parse_to_an_upload_or_raise_bad_key(data: bytes) -> None:
    """Whatever the body, the parser answers a KeyUpload or BadKey, never another exception."""
    try:
        upload = parse_key_upload(data, CAP)
    except BadKey as exc:
        event(exc.code)
        assert exc.code in CODES
    else:
        event("accepted")
        assert isinstance(upload, KeyUpload)


# --- valid uploads ------------------------------------------------------------------


@given(uploads(max_one_time=CAP))
def test_valid_uploads_are_accepted_as_sent(upload: Upload) -> None:
    """A real signed bundle is accepted, every key and id as it was sent."""
    parsed = parse_key_upload(encoded(upload.body), CAP)
    assert parsed.identity_key == upload.identity_key
    spk = parsed.signed_prekey
    assert (spk.key_id, spk.public_key, spk.signature) == upload.signed
    assert [(k.key_id, k.public_key) for k in parsed.one_time_prekeys] == upload.one_time


@given(uploads(), st.dictionaries(st.sampled_from(["x", "v", "device", "note"]), json_values))
def test_unknown_fields_are_ignored(upload: Upload, extra: dict[str, Any]) -> None:
    """Fields the format does not know change nothing, at any level."""
    body = copy.deepcopy(upload.body)
    body.update(extra)
    body["signed_prekey"].update(extra)
    for otk in body["one_time_prekeys"]:
        otk.update(extra)
    assert parse_key_upload(encoded(body), CAP) == parse_key_upload(encoded(upload.body), CAP)


# --- single faults ------------------------------------------------------------------

Fault = tuple[str, str, Callable[[Any], Any]]  # expected code, what it does, how


def _flip_padding_bits(value: str) -> str:
    """The same bytes, but with a non-zero bit in the padding: not canonical."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stem = value.rstrip("=")
    last = alphabet.index(stem[-1])
    return stem[:-1] + alphabet[last | 1] + value[len(stem) :]


non_strings = st.sampled_from([None, 1, 1.5, True, [], {}])
non_canonical = st.sampled_from(
    [
        ("strip the padding", lambda v: v.rstrip("=")),
        ("url-safe alphabet", lambda v: "-_" + v[2:]),
        ("a line break", lambda v: v[:20] + "\n" + v[20:]),
        ("a space", lambda v: " " + v),
        ("non-zero padding bits", _flip_padding_bits),
        ("a character outside base64", lambda v: v[:-2] + "*="),
        ("extra padding", lambda v: v + "=="),
    ]
)
wrong_lengths = st.integers(0, 100)


@st.composite
def base64_faults(draw: st.DrawFn, length: int) -> tuple[str, Callable[[str], Any]]:
    """A fault in a base64 field that holds *length* bytes: its code and the change."""
    kind = draw(st.sampled_from(["type", "encoding", "length"]))
    if kind == "type":
        value = draw(non_strings)
        return "invalid_request", lambda _: value
    if kind == "encoding":
        _, change = draw(non_canonical)
        return "bad_base64", change
    size = draw(wrong_lengths.filter(lambda n: n != length))
    raw = draw(st.binary(min_size=size, max_size=size))
    return "bad_key_length", lambda _: b64(raw)


bad_key_ids = st.sampled_from([-1, MAX_KEY_ID + 1, 2**63, 1.5, "1", None, True, []])


def field_at(body: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The container of the field named by *path* (``a.b[2].c``) and its key."""
    parts: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    container: Any = body
    for part in parts[:-1]:
        container = container[part]
    return container, parts[-1]


@st.composite
def faulty(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """A valid upload with exactly one thing wrong: (body, expected code, expected field)."""
    upload = draw(uploads())
    body = copy.deepcopy(upload.body)
    n = len(body["one_time_prekeys"])
    b64_fields = [("identity_key", 32), ("signed_prekey.public_key", 32)]
    b64_fields.append(("signed_prekey.signature", 64))
    b64_fields += [(f"one_time_prekeys[{i}].public_key", 32) for i in range(n)]
    id_fields = ["signed_prekey.key_id"] + [f"one_time_prekeys[{i}].key_id" for i in range(n)]
    kinds = ["base64", "key_id", "missing", "signature", "too_many"]
    if n >= 2:
        kinds.append("duplicate")
    kind = draw(st.sampled_from(kinds))
    event(kind)

    if kind == "base64":
        path, length = draw(st.sampled_from(b64_fields))
        code, change = draw(base64_faults(length))
        container, key = field_at(body, path)
        container[key] = change(container[key])
        return encoded(body), code, path
    if kind == "key_id":
        path = draw(st.sampled_from(id_fields))
        container, key = field_at(body, path)
        container[key] = draw(bad_key_ids)
        return encoded(body), "invalid_request", path
    if kind == "missing":
        path = draw(st.sampled_from([f for f, _ in b64_fields] + id_fields + ["one_time_prekeys"]))
        container, key = field_at(body, path)
        del container[key]
        return encoded(body), "invalid_request", path
    if kind == "signature":
        # A well-formed value that breaks the signature: another key or signature.
        path, length = draw(
            st.sampled_from(
                [
                    ("identity_key", 32),
                    ("signed_prekey.public_key", 32),
                    ("signed_prekey.signature", 64),
                ]
            )
        )
        container, key = field_at(body, path)
        other = draw(st.binary(min_size=length, max_size=length).map(b64))
        if other == container[key]:
            other = b64(bytes(length))
        container[key] = other
        return encoded(body), "bad_signature", "signed_prekey.signature"
    if kind == "too_many":
        body["one_time_prekeys"] = [
            {"key_id": i, "public_key": b64(bytes(32))} for i in range(CAP + 1)
        ]
        return encoded(body), "too_many_prekeys", "one_time_prekeys"
    i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
    body["one_time_prekeys"][j]["key_id"] = body["one_time_prekeys"][i]["key_id"]
    return encoded(body), "duplicate_key_id", f"one_time_prekeys[{j}].key_id"


@given(faulty())
def test_any_single_fault_is_refused_with_its_code_and_field(case: tuple[bytes, str, str]) -> None:
    """One wrong value in a valid upload is refused with the code and JSON path it deserves."""
    data, code, field = case
    exc = refused(data)
    assert (exc.code, exc.field) == (code, field)


@given(uploads(), st.integers(1, 300))
def test_more_prekeys_than_the_cap_are_too_many(upload: Upload, cap: int) -> None:
    """The batch cap is exact: up to the cap is fine, one more is too_many_prekeys."""
    n = len(upload.one_time)
    if n <= cap:
        assert len(parse_key_upload(encoded(upload.body), cap).one_time_prekeys) == n
    else:
        try:
            parse_key_upload(encoded(upload.body), cap)
        except BadKey as exc:
            assert exc.code == "too_many_prekeys"
        else:
            raise AssertionError(f"{n} prekeys accepted under a cap of {cap}")
