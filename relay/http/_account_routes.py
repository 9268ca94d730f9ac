"""The caller's devices and sessions."""

from __future__ import annotations

from quart import Quart
from quart_trio.wrappers.response import TrioResponse as Response

from ..errors import NotFound
from ..services import Services
from ._auth_routes import bearer_claims, requires_auth
from ._errors import json_response


def register_account_routes(app: Quart, services: Services) -> None:
    store, auth = services.store, services.auth

    @app.get("/api/devices")
    @requires_auth(services)
    async def list_devices() -> Response:
        claims = bearer_claims()
        devices = await store.list_devices(claims.user_id)
        return json_response(
            {
                "devices": [
                    {
                        "device_id": d.id,
                        "name": d.name,
                        "created_at": d.created_at,
                        "last_seen_at": d.last_seen_at,
                        "current": d.id == claims.device_id,
                    }
                    for d in devices
                ]
            }
        )

    @app.delete("/api/devices/<device_id>")
    @requires_auth(services)
    async def delete_device(device_id: str) -> Response:
        claims = bearer_claims()
        if not await auth.delete_device(claims.user_id, device_id):
            raise NotFound("device_not_found", "no such device on this account")
        return Response(status=204)

    @app.get("/api/sessions")
    @requires_auth(services)
    async def list_sessions() -> Response:
        claims = bearer_claims()
        sessions = await store.list_sessions(claims.user_id, services.wall_clock())
        return json_response(
            {
                "sessions": [
                    {
                        "session_id": s.id,
                        "device_id": s.device_id,
                        "created_at": s.created_at,
                        "last_used_at": s.last_used_at,
                        "expires_at": s.expires_at,
                        "current": s.id == claims.session_id,
                    }
                    for s in sessions
                ]
            }
        )

    @app.delete("/api/sessions/<session_id>")
    @requires_auth(services)
    async def delete_session(session_id: str) -> Response:
        claims = bearer_claims()
        if not await auth.revoke_session(session_id, "session_deleted", claims.user_id):
            raise NotFound("session_not_found", "no such active session on this account")
        return Response(status=204)
