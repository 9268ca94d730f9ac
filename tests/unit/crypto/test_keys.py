"""Key bundles: strict base64, signed-prekey verification, upload validation."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from nacl.signing import SigningKey

from relay.crypto import (
    BadKey,
    decode_b64,
    encode_b64,
    parse_key_upload,
    verify_signed_prekey,
)
from relay.http._keys_routes import bundle_dict
from relay.store import Bundle, OneTimePrekey, SignedPrekey
from tests.keyhelpers import (
    make_device_keys,
    make_x3dh_device_keys,
    new_x3dh_state,
    to_x3dh_bundle,
)

CAP = 100
KEY = bytes(range(32))

# RFC 8032 §7.1, Ed25519 TEST 1, TEST 2 and TEST 3: (public key, message, signature).
RFC8032 = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da08"
        "5ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18"
        "ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


def body(upload: dict[str, Any]) -> bytes:
    return json.dumps(upload).encode()


def refusal(data: bytes | dict[str, Any], max_prekeys: int = CAP) -> BadKey:
    raw = data if isinstance(data, bytes) else body(data)
    with pytest.raises(BadKey) as info:
        parse_key_upload(raw, max_prekeys)
    return info.value


def valid(n_one_time: int = 3) -> dict[str, Any]:
    upload: dict[str, Any] = make_device_keys(n_one_time)[0]
    return upload


# -- Ed25519 verification ---------------------------------------------------


@pytest.mark.parametrize(("public", "message", "signature"), RFC8032, ids=["T1", "T2", "T3"])
def test_rfc8032_vectors_verify(public: str, message: str, signature: str) -> None:
    """The RFC 8032 Ed25519 test vectors verify."""
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify_signed_prekey(pk, msg, sig)


@pytest.mark.parametrize(("public", "message", "signature"), RFC8032, ids=["T1", "T2", "T3"])
def test_rfc8032_vectors_fail_with_a_flipped_signature_bit(
    public: str, message: str, signature: str
) -> None:
    """Flipping one bit of an RFC 8032 signature makes it fail."""
    sig = bytearray.fromhex(signature)
    sig[5] ^= 0x01
    assert not verify_signed_prekey(bytes.fromhex(public), bytes.fromhex(message), bytes(sig))


def test_verify_returns_false_instead_of_raising_on_garbage() -> None:
    """Invalid points and wrong lengths give False, never an exception."""
    pk, _, sig = (bytes.fromhex(x) for x in RFC8032[0])
    assert not verify_signed_prekey(b"\xff" * 32, b"", sig)
    assert not verify_signed_prekey(pk[:31], b"", sig)
    assert not verify_signed_prekey(pk, b"", sig[:63])


# -- an independent implementation (python-x3dh) -----------------------------


def test_x3dh_package_bundle_is_accepted() -> None:
    """A bundle made by the x3dh package parses and its signature verifies."""
    upload, device = make_x3dh_device_keys(5)
    parsed = parse_key_upload(body(upload), CAP)
    bundle = device.state.bundle
    assert parsed.identity_key == bundle.identity_key
    assert parsed.signed_prekey.public_key == bundle.signed_pre_key
    assert verify_signed_prekey(
        bundle.identity_key, bundle.signed_pre_key, bundle.signed_pre_key_sig
    )
    assert {k.public_key for k in parsed.one_time_prekeys} == set(bundle.pre_keys)


def test_x3dh_agreement_runs_over_our_bundle_encoding() -> None:
    """x3dh parties agree on a secret via a bundle that went through parse and bundle_dict."""
    upload, bob = make_x3dh_device_keys(1)
    parsed = parse_key_upload(body(upload), CAP)
    otk = parsed.one_time_prekeys[0]
    fetched = Bundle("dev-b", parsed.identity_key, parsed.signed_prekey, otk, remaining=0)
    alice = new_x3dh_state()

    async def agree() -> tuple[bytes, bytes]:
        secret_a, _, header = await alice.get_shared_secret_active(
            to_x3dh_bundle(bundle_dict(fetched))
        )
        secret_b, _, _ = await bob.state.get_shared_secret_passive(header)
        return secret_a, secret_b

    secret_a, secret_b = asyncio.run(agree())
    assert secret_a == secret_b


# -- accepted uploads ---------------------------------------------------------


def test_generated_upload_round_trips_to_raw_bytes() -> None:
    """A valid upload yields the raw keys, signature and ids it was built from."""
    upload, keys = make_device_keys(3, first_key_id=7)
    parsed = parse_key_upload(body(upload), CAP)
    assert parsed.identity_key == bytes(keys.identity.verify_key)
    assert parsed.signed_prekey.public_key == bytes(keys.signed_prekey.public_key)
    assert [(k.key_id, k.public_key) for k in parsed.one_time_prekeys] == [
        (i, bytes(sk.public_key)) for i, sk in keys.one_time.items()
    ]


def test_zero_one_time_prekeys_allowed() -> None:
    """An upload with an empty one_time_prekeys list is accepted."""
    assert parse_key_upload(body(valid(0)), CAP).one_time_prekeys == []


def test_unknown_fields_ignored() -> None:
    """Unknown fields at any level are ignored."""
    upload = valid(1)
    upload["extra"] = {"x": 1}
    upload["signed_prekey"]["created"] = "now"
    upload["one_time_prekeys"][0]["note"] = None
    assert len(parse_key_upload(body(upload), CAP).one_time_prekeys) == 1


def test_exactly_the_cap_is_accepted() -> None:
    """max_prekeys one-time prekeys are allowed."""
    assert len(parse_key_upload(body(valid(4)), 4).one_time_prekeys) == 4


def test_largest_key_id_accepted() -> None:
    """key_id 2**31 - 1 is the largest allowed."""
    upload = valid(1)
    upload["one_time_prekeys"][0]["key_id"] = 2**31 - 1
    assert parse_key_upload(body(upload), CAP).one_time_prekeys[0].key_id == 2**31 - 1


def test_signed_and_one_time_ids_are_separate_namespaces() -> None:
    """A one-time prekey may share its id with the signed prekey."""
    upload, _ = make_device_keys(1, first_key_id=1, signed_prekey_id=1)
    assert parse_key_upload(body(upload), CAP).signed_prekey.key_id == 1


# -- strict base64 ------------------------------------------------------------


def test_encode_then_decode_round_trips() -> None:
    """decode_b64 accepts exactly what encode_b64 produces."""
    assert decode_b64(encode_b64(KEY), 32, "k") == KEY


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), id="urlsafe"),
        pytest.param(encode_b64(KEY).rstrip("="), id="missing-padding"),
        pytest.param(encode_b64(KEY)[:20] + "\n" + encode_b64(KEY)[20:], id="newline"),
        pytest.param(" " + encode_b64(KEY), id="leading-space"),
        pytest.param(encode_b64(KEY)[:-2] + "B=", id="non-canonical-bits"),
        pytest.param(encode_b64(KEY)[:-1] + "é", id="non-ascii"),
    ],
)
def test_bad_base64_refused(text: str) -> None:
    """Anything but canonical standard padded base64 is bad_base64."""
    with pytest.raises(BadKey) as info:
        decode_b64(text, 32, "identity_key")
    assert (info.value.code, info.value.field) == ("bad_base64", "identity_key")


def test_non_string_base64_value_refused() -> None:
    """A non-string where base64 is expected is invalid_request."""
    with pytest.raises(BadKey) as info:
        decode_b64(b"AAAA", 3, "k")
    assert info.value.code == "invalid_request"


def test_bad_base64_names_the_prekey() -> None:
    """A bad one-time prekey's error names its index."""
    upload = valid(4)
    upload["one_time_prekeys"][3]["public_key"] = "not base64!"
    err = refusal(upload)
    assert (err.code, err.field) == ("bad_base64", "one_time_prekeys[3].public_key")


# -- lengths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "size"),
    [
        (("identity_key",), 31),
        (("signed_prekey", "public_key"), 33),
        (("signed_prekey", "signature"), 63),
        (("one_time_prekeys", 1, "public_key"), 64),
    ],
)
def test_wrong_length_refused(path: tuple[Any, ...], size: int) -> None:
    """A key or signature of the wrong decoded length is bad_key_length."""
    upload = valid(2)
    *parents, leaf = path
    target = upload
    for step in parents:
        target = target[step]
    target[leaf] = encode_b64(b"\x01" * size)
    err = refusal(upload)
    expected = ".".join(str(p) for p in path).replace(".1.", "[1].")
    assert (err.code, err.field) == ("bad_key_length", expected)


# -- signatures ---------------------------------------------------------------


def test_signature_by_another_key_refused() -> None:
    """A signature made by a key other than the identity key is bad_signature."""
    upload = valid()
    spk = base64.b64decode(upload["signed_prekey"]["public_key"])
    upload["signed_prekey"]["signature"] = encode_b64(SigningKey.generate().sign(spk).signature)
    assert refusal(upload).code == "bad_signature"


def test_signature_over_the_base64_text_refused() -> None:
    """The signature must cover the 32 raw bytes, not their base64 text."""
    upload, keys = make_device_keys(1)
    text = upload["signed_prekey"]["public_key"].encode()
    upload["signed_prekey"]["signature"] = encode_b64(keys.identity.sign(text).signature)
    err = refusal(upload)
    assert (err.code, err.field) == ("bad_signature", "signed_prekey.signature")


def test_tampered_signature_refused() -> None:
    """A signature with one flipped bit is bad_signature."""
    upload = valid()
    sig = bytearray(base64.b64decode(upload["signed_prekey"]["signature"]))
    sig[0] ^= 0x80
    upload["signed_prekey"]["signature"] = encode_b64(bytes(sig))
    assert refusal(upload).code == "bad_signature"


def test_identity_key_that_is_not_a_point_refused() -> None:
    """An identity key that is no Ed25519 point fails as bad_signature."""
    upload = valid()
    upload["identity_key"] = encode_b64(b"\xff" * 32)
    assert refusal(upload).code == "bad_signature"


# -- ids and batch size -------------------------------------------------------


def test_duplicate_key_ids_refused() -> None:
    """Two one-time prekeys with one id in the same upload is duplicate_key_id."""
    upload = valid(3)
    upload["one_time_prekeys"][2]["key_id"] = upload["one_time_prekeys"][0]["key_id"]
    err = refusal(upload)
    assert (err.code, err.field) == ("duplicate_key_id", "one_time_prekeys[2].key_id")


def test_one_over_the_cap_refused() -> None:
    """max_prekeys + 1 one-time prekeys is too_many_prekeys."""
    err = refusal(valid(5), max_prekeys=4)
    assert (err.code, err.field) == ("too_many_prekeys", "one_time_prekeys")


def test_default_cap_plus_one_refused() -> None:
    """101 one-time prekeys exceed the default cap of 100."""
    assert refusal(valid(CAP + 1)).code == "too_many_prekeys"


@pytest.mark.parametrize("key_id", [-1, True, "5", 2**31, 1.0, None], ids=repr)
def test_bad_key_id_refused(key_id: object) -> None:
    """key_id must be an integer JSON number in [0, 2**31)."""
    upload = valid(2)
    upload["one_time_prekeys"][1]["key_id"] = key_id
    err = refusal(upload)
    assert (err.code, err.field) == ("invalid_request", "one_time_prekeys[1].key_id")


# -- shape, types, JSON -------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "name"),
    [((), "identity_key"), ((), "one_time_prekeys"), (("signed_prekey",), "signature")],
)
def test_missing_field_refused(parent: tuple[str, ...], name: str) -> None:
    """A missing required field is invalid_request naming the field."""
    upload = valid()
    target = upload
    for step in parent:
        target = target[step]
    del target[name]
    err = refusal(upload)
    assert (err.code, err.field) == ("invalid_request", ".".join((*parent, name)))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("identity_key", 42),
        ("signed_prekey", "x"),
        ("one_time_prekeys", {}),
        ("one_time_prekeys", None),
    ],
)
def test_wrong_type_refused(name: str, value: object) -> None:
    """A field of the wrong JSON type is invalid_request naming the field."""
    upload = valid()
    upload[name] = value
    err = refusal(upload)
    assert (err.code, err.field) == ("invalid_request", name)


def test_non_object_body_refused() -> None:
    """A JSON body that is not an object is invalid_request for the whole body."""
    err = refusal(b"[]")
    assert (err.code, err.field) == ("invalid_request", "")


@pytest.mark.parametrize("data", [b"", b"{", b'{"identity_key": }', b"{} x"], ids=repr)
def test_malformed_json_refused(data: bytes) -> None:
    """A body that is not JSON is malformed_json."""
    assert refusal(data).code == "malformed_json"


def test_non_utf8_body_refused() -> None:
    """A body that is not UTF-8 is malformed_json."""
    data = body(valid()).replace(b'"identity_key": "', b'"identity_key": "\xff', 1)
    assert refusal(data).code == "malformed_json"


# -- check order --------------------------------------------------------------


def test_type_errors_come_before_batch_size() -> None:
    """An oversized batch with a type error reports invalid_request."""
    upload = valid(5)
    upload["signed_prekey"]["key_id"] = "1"
    assert refusal(upload, max_prekeys=4).code == "invalid_request"


def test_batch_size_comes_before_base64() -> None:
    """An oversized batch with bad base64 reports too_many_prekeys."""
    upload = valid(5)
    upload["identity_key"] = "???"
    assert refusal(upload, max_prekeys=4).code == "too_many_prekeys"


def test_duplicates_come_before_signature() -> None:
    """Duplicate ids are reported even when the signature is also bad."""
    upload = valid(2)
    upload["one_time_prekeys"][1]["key_id"] = upload["one_time_prekeys"][0]["key_id"]
    upload["signed_prekey"]["signature"] = encode_b64(bytes(64))
    assert refusal(upload).code == "duplicate_key_id"


# -- fetched bundles ----------------------------------------------------------


def test_bundle_dict_encodes_keys_as_base64() -> None:
    """bundle_dict gives the contract's JSON shape with standard base64 keys."""
    spk = SignedPrekey(3, KEY, bytes(64))
    out = bundle_dict(Bundle("d1", KEY[::-1], spk, OneTimePrekey(9, KEY), remaining=4))
    assert out == {
        "device_id": "d1",
        "identity_key": encode_b64(KEY[::-1]),
        "signed_prekey": {
            "key_id": 3,
            "public_key": encode_b64(KEY),
            "signature": encode_b64(bytes(64)),
        },
        "one_time_prekey": {"key_id": 9, "public_key": encode_b64(KEY)},
    }
    json.dumps(out)


def test_bundle_dict_without_one_time_prekey_gives_none() -> None:
    """An exhausted device's bundle has one_time_prekey None."""
    spk = SignedPrekey(3, KEY, bytes(64))
    assert bundle_dict(Bundle("d1", KEY, spk, None, remaining=0))["one_time_prekey"] is None
