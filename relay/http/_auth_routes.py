"""Accounts, login, refresh, logout; and the Bearer check for other routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from quart import Quart, g, request
from quart_trio.wrappers.response import TrioResponse as Response

from ..auth import Grant, bearer_token
from ..crypto import AccessClaims, InvalidToken
from ..errors import NotAuthenticated
from ..net import source_of
from ..services import Services
from ._bodies import Credentials, LoginBody, PasswordChange, PasswordConfirmation, RefreshBody
from ._errors import json_response, read_body

P = ParamSpec("P")
R = TypeVar("R")


def bearer_claims() -> AccessClaims:
    """The authenticated caller's claims (set by :func:`requires_auth`)."""
    claims: AccessClaims = g.claims
    return claims


def requires_auth(
    services: Services,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Refuse the request with 401 unless it carries a valid Bearer token."""

    def decorate(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token = bearer_token(request.headers.get("Authorization"))
            if token is None:
                raise _unauthorized("a Bearer access token is required")
            try:
                g.claims = await services.auth.authenticate(token)
            except InvalidToken as exc:
                services.log.warning("auth.token_rejected", reason=exc.reason)
                raise _unauthorized(f"the access token is not valid ({exc.reason})") from None
            await services.auth.note_seen(g.claims.session_id)
            return await handler(*args, **kwargs)

        return wrapper

    return decorate


def _unauthorized(message: str) -> NotAuthenticated:
    return NotAuthenticated("invalid_token", message)


def client_ip() -> str:
    """The client's source key: the socket peer (an IPv6 /64), never X-Forwarded-For."""
    # A header is the client's to forge; see relay.net.source_of for the /64.
    remote = request.remote_addr
    return source_of(remote) if remote else "unknown"


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "expires_in": grant.expires_in,
        "refresh_token": grant.refresh_token,
        "user_id": grant.user_id,
        "device_id": grant.device_id,
        "session_id": grant.session_id,
    }


def register_auth_routes(app: Quart, services: Services) -> None:
    auth = services.auth

    @app.post("/api/accounts")
    async def create_account() -> Response:
        body = await read_body(Credentials)
        user = await auth.register(body.username, body.password, ip=client_ip())
        return json_response({"user_id": user.id, "username": user.username}, 201)

    @app.post("/api/login")
    async def login() -> Response:
        body = await read_body(LoginBody)
        grant = await auth.login(
            body.username,
            body.password,
            ip=client_ip(),
            device_id=body.device_id,
            device_name=body.device_name,
        )
        return json_response(_grant_json(grant))

    @app.post("/api/token/refresh")
    async def refresh() -> Response:
        body = await read_body(RefreshBody)
        grant = await auth.refresh(body.refresh_token)
        return json_response(_grant_json(grant))

    @app.post("/api/logout")
    @requires_auth(services)
    async def logout() -> Response:
        claims = bearer_claims()
        await auth.revoke_session(claims.session_id, "logout", claims.user_id)
        return Response(status=204)

    @app.post("/api/logout/all")
    @requires_auth(services)
    async def logout_all() -> Response:
        await services.accounts.logout_all(bearer_claims())
        return Response(status=204)

    @app.post("/api/account/password")
    @requires_auth(services)
    async def change_password() -> Response:
        body = await read_body(PasswordChange)
        await services.accounts.change_password(
            bearer_claims(), body.old_password, body.new_password, client_ip()
        )
        return Response(status=204)

    @app.post("/api/account/delete")
    @requires_auth(services)
    async def delete_account() -> Response:
        body = await read_body(PasswordConfirmation)
        await services.accounts.delete_account(bearer_claims(), body.password, client_ip())
        return Response(status=204)
