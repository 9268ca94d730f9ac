"""Passwords (argon2id), access and refresh tokens, key and signature checks."""

from __future__ import annotations

from ._keys import BadKey as BadKey
from ._keys import KeyUpload as KeyUpload
from ._keys import OneTimePrekey as OneTimePrekey
from ._keys import SignedPrekey as SignedPrekey
from ._keys import decode_b64 as decode_b64
from ._keys import encode_b64 as encode_b64
from ._keys import parse_key_upload as parse_key_upload
from ._keys import verify_signed_prekey as verify_signed_prekey
from ._passwords import MAX_PASSWORD_CHARS as MAX_PASSWORD_CHARS
from ._passwords import MIN_PASSWORD_CHARS as MIN_PASSWORD_CHARS
from ._passwords import PasswordHasher as PasswordHasher
from ._tokens import AccessClaims as AccessClaims
from ._tokens import InvalidToken as InvalidToken
from ._tokens import TokenService as TokenService
from ._tokens import hash_refresh_token as hash_refresh_token
from ._tokens import new_refresh_token as new_refresh_token
