"""Request bodies, validated strictly by msgspec (unknown fields ignored)."""

from __future__ import annotations

from typing import Annotated

import msgspec

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]


class Credentials(msgspec.Struct, frozen=True):
    username: _Text
    password: _Text


class LoginBody(msgspec.Struct, frozen=True):
    username: _Text
    password: _Text
    device_id: _Id | None = None
    device_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class PasswordChange(msgspec.Struct, frozen=True):
    old_password: _Text
    new_password: _Text


class PasswordConfirmation(msgspec.Struct, frozen=True):
    password: _Text


class RefreshBody(msgspec.Struct, frozen=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
