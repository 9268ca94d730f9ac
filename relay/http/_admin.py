"""The operator's endpoint: the live relay's state, unlocking users, revoking sessions.

Off by default (``[admin] enabled``). It listens on its own port, bound to
loopback unless a token is configured; with a token every request must carry
``Authorization: Bearer <token>`` (compared in constant time). It also
serves ``/metrics``, so that metrics can leave the public port
(``http.metrics = false``).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import msgspec
from quart import Quart, request
from quart_trio import QuartTrio
from quart_trio.wrappers.response import TrioResponse as Response

from .. import __version__
from ..auth import bearer_token
from ..errors import NotAuthenticated, Refused
from ..obs import CONTENT_TYPE
from ..services import Services
from ._errors import ApiError, api_error, error_response, json_response, read_body

P = ParamSpec("P")
R = TypeVar("R")

LiveView = Callable[[], Mapping[str, Any]]
"""The WebSocket side's live figures (connections, queues), as JSON-ready data."""

_Ids = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=10_000)]


class Revocations(msgspec.Struct, frozen=True):
    session_ids: _Ids
    reason: Annotated[str, msgspec.Meta(max_length=32)] = "operator"


def create_admin_app(services: Services, live: LiveView) -> Quart:
    """The admin API over *services*; *live* reports the WebSocket side."""
    app = QuartTrio("relay-admin")
    app.config["MAX_CONTENT_LENGTH"] = services.config.http.max_body_bytes
    token = services.config.admin.token
    guarded = _guard(token)

    @app.errorhandler(Refused)
    async def refused(error: Refused) -> Response:
        return error_response(api_error(error))

    @app.errorhandler(ApiError)
    async def refusal(error: ApiError) -> Response:
        return error_response(error)

    @app.get("/admin/status")
    @guarded
    async def status() -> Response:
        store = services.store
        refusing = await services.limits.refusing(100)
        return json_response(
            {
                "version": __version__,
                **live(),
                "stored_queues": [
                    {"device_id": device, "username": name, "messages": count}
                    for device, name, count in await store.queue_depths(20)
                ],
                "limits_refusing": [
                    {"limit": r.limit, "key": r.key, "seconds": round(r.seconds, 3)}
                    for r in refusing
                ],
            }
        )

    @app.post("/admin/users/<username>/unlock")
    @guarded
    async def unlock(username: str) -> Response:
        return json_response({"unlocked": await services.accounts.unlock(username)})

    @app.post("/admin/sessions/revoke")
    @guarded
    async def revoke() -> Response:
        body = await read_body(Revocations)
        # In the store too (refresh tokens die): the caller may not have done it
        # (``relay user`` has; then this finds them revoked already, harmlessly).
        now = services.wall_clock()
        for session_id in body.session_ids:
            await services.store.revoke_session(session_id, now)
        await services.auth.revoker.revoke(body.session_ids, body.reason)
        return json_response({"revoked": len(body.session_ids)})

    @app.get("/metrics")
    @guarded
    async def metrics() -> Response:
        return Response(services.metrics.render(), content_type=CONTENT_TYPE)

    return app


def _guard(
    token: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """With a token, refuse requests that do not present it (constant-time compare)."""
    expected = token.encode()

    def decorate(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if expected:
                given = (bearer_token(request.headers.get("Authorization")) or "").encode()
                if not hmac.compare_digest(given, expected):
                    raise NotAuthenticated("invalid_token", "the admin token is required")
            return await handler(*args, **kwargs)

        return wrapper

    return decorate
