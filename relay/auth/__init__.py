"""Accounts, login, sessions, token checks and the origin policy."""

from __future__ import annotations

from ._accounts import AccountService as AccountService
from ._bearer import bearer_token as bearer_token
from ._login_guard import LoginGuard as LoginGuard
from ._origin import origin_allowed as origin_allowed
from ._service import AuthService as AuthService
from ._service import Grant as Grant
from ._service import check_password_length as check_password_length
from ._service import normalise_username as normalise_username
