"""Key bundles: strict parsing of uploads and encoding of fetched bundles.

Pure functions (no I/O, no Trio). Wire format, per the design doc: all keys and
signatures are *standard* base64 (RFC 4648 §4, with padding) of the raw bytes;
``identity_key`` is an Ed25519 public key, prekeys are X25519 public keys, and
``signed_prekey.signature`` is the identity key's Ed25519 signature over the
signed prekey's 32 raw public-key bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec
import nacl.exceptions
import nacl.signing


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    key_id: int
    public_key: bytes  # 32 raw bytes (X25519)
    signature: bytes  # 64 raw bytes (Ed25519 by the identity key)


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    key_id: int
    public_key: bytes  # 32 raw bytes (X25519)


@dataclass(frozen=True, slots=True)
class KeyUpload:
    """A device's public keys, parsed and verified by :func:`parse_key_upload`."""

    identity_key: bytes  # 32 raw bytes (Ed25519)
    signed_prekey: SignedPrekey
    one_time_prekeys: Sequence[OneTimePrekey]


KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
MAX_KEY_ID = 2**31 - 1


class BadKey(ValueError):
    """A key upload (or one value in it) was refused.

    ``code`` is stable and meant for clients: ``malformed_json``, ``invalid_json``
    (nested too deeply),
    ``invalid_request`` (wrong shape, type or missing field), ``too_many_prekeys``,
    ``bad_base64``, ``bad_key_length``, ``duplicate_key_id`` or ``bad_signature``.
    ``field`` is the JSON path of the offending value, e.g.
    ``one_time_prekeys[3].public_key`` (empty when the body as a whole is at fault).
    """

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.code = code
        self.field = field
        self.message = message


KeyId = Annotated[int, msgspec.Meta(ge=0, le=MAX_KEY_ID)]


class _SignedPrekeyIn(msgspec.Struct):
    key_id: KeyId
    public_key: str
    signature: str


class _OneTimePrekeyIn(msgspec.Struct):
    key_id: KeyId
    public_key: str


class _KeyUploadIn(msgspec.Struct):
    identity_key: str
    signed_prekey: _SignedPrekeyIn
    one_time_prekeys: list[_OneTimePrekeyIn]


_DECODER = msgspec.json.Decoder(_KeyUploadIn, strict=True)
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# msgspec: "Expected `int`, got `str` - at `$.a[0].b`"; missing: "... field `x` - at `$.a`"
_MISSING = re.compile(r"missing required field `([^`]+)`")
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def encode_b64(raw: bytes) -> str:
    """Standard, padded base64 of *raw* (the only form :func:`decode_b64` accepts)."""
    return base64.b64encode(raw).decode("ascii")


def decode_b64(value: object, length: int, field: str) -> bytes:
    """Decode canonical standard base64 into exactly *length* bytes.

    Accepts only the output of :func:`encode_b64`: the urlsafe alphabet,
    whitespace, missing padding and non-zero padding bits are refused with
    ``bad_base64``; a non-string with ``invalid_request``; a decoded value of
    another length with ``bad_key_length``.
    """
    if not isinstance(value, str):
        raise BadKey("invalid_request", field, "expected a base64 string")
    if not _B64_ALPHABET.fullmatch(value) or len(value) % 4:
        raise BadKey("bad_base64", field, "not standard padded base64 (RFC 4648 §4)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("bad_base64", field, "not standard padded base64 (RFC 4648 §4)") from None
    if encode_b64(raw) != value:
        raise BadKey("bad_base64", field, "non-canonical base64 encoding")
    if len(raw) != length:
        raise BadKey("bad_key_length", field, f"expected {length} bytes, got {len(raw)}")
    return raw


def verify_signed_prekey(identity_key: bytes, public_key: bytes, signature: bytes) -> bool:
    """True iff *signature* is a valid Ed25519 signature of *public_key* by *identity_key*.

    Never raises for bad input: wrong lengths, an identity key that is not a
    valid curve point and forged signatures all give False.
    """
    try:
        nacl.signing.VerifyKey(identity_key).verify(public_key, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def _validation_field(message: str) -> str:
    """The JSON path named in a msgspec validation message ('' for the root)."""
    at = _PATH.search(message)
    path = at.group(1) if at else ""
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path


def _malformed(exc: msgspec.DecodeError) -> BadKey:
    return BadKey("malformed_json", "", f"body is not valid UTF-8 JSON: {exc}")


def _too_deep() -> BadKey:
    return BadKey("invalid_json", "", "the body's JSON is nested too deeply")


def _check_syntax(data: bytes) -> None:
    """Raise ``malformed_json`` (or ``invalid_json``: too deep) unless *data* is UTF-8 JSON."""
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    except RecursionError:
        raise _too_deep() from None


def parse_key_upload(data: bytes, max_prekeys: int) -> KeyUpload:
    """Parse and fully validate a key upload body; raise :class:`BadKey` if refused.

    A returned upload has 32-byte keys, a 64-byte signature that verifies,
    key ids in ``[0, 2**31)``, at most *max_prekeys* one-time prekeys (zero is
    fine) with distinct ids. Unknown fields are ignored. Checks run in this
    order, so the first failing one names the error: JSON syntax / UTF-8,
    shape and types, batch size, base64 and lengths, duplicate ids, signature.
    """
    try:
        body = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        _check_syntax(data)  # a type error may precede a syntax error later in the body
        raise BadKey("invalid_request", _validation_field(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    except RecursionError:
        raise _too_deep() from None

    if len(body.one_time_prekeys) > max_prekeys:
        raise BadKey(
            "too_many_prekeys",
            "one_time_prekeys",
            f"{len(body.one_time_prekeys)} one-time prekeys; at most {max_prekeys} per upload",
        )

    identity_key = decode_b64(body.identity_key, KEY_LENGTH, "identity_key")
    spk = body.signed_prekey
    signed = SignedPrekey(
        key_id=spk.key_id,
        public_key=decode_b64(spk.public_key, KEY_LENGTH, "signed_prekey.public_key"),
        signature=decode_b64(spk.signature, SIGNATURE_LENGTH, "signed_prekey.signature"),
    )
    one_time = [
        OneTimePrekey(
            key_id=otk.key_id,
            public_key=decode_b64(otk.public_key, KEY_LENGTH, f"one_time_prekeys[{i}].public_key"),
        )
        for i, otk in enumerate(body.one_time_prekeys)
    ]

    seen: set[int] = set()
    for i, otk in enumerate(one_time):
        if otk.key_id in seen:
            raise BadKey(
                "duplicate_key_id",
                f"one_time_prekeys[{i}].key_id",
                f"key id {otk.key_id} appears more than once in this upload",
            )
        seen.add(otk.key_id)

    if not verify_signed_prekey(identity_key, signed.public_key, signed.signature):
        raise BadKey(
            "bad_signature",
            "signed_prekey.signature",
            "not an Ed25519 signature of the signed prekey's raw bytes by the identity key",
        )
    return KeyUpload(identity_key=identity_key, signed_prekey=signed, one_time_prekeys=one_time)
