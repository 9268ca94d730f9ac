"""Refresh rotation, reuse detection, logout, devices and sessions over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from relay.app import open_services
from relay.crypto import InvalidToken
from tests.conftest import (
    SECRET,
    Relay,
    RelayFactory,
    WallClock,
    bearer,
    login,
    signed_up,
)


async def signed_in(client: httpx.AsyncClient, name: str = "alice") -> dict[str, Any]:
    return await signed_up(client, name)


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/token/refresh", json={"refresh_token": token})


async def test_refresh_returns_a_new_pair(client: httpx.AsyncClient) -> None:
    """A current refresh token buys a new access and refresh token for the same session."""
    grant = await signed_in(client)
    response = await refresh(client, grant["refresh_token"])
    assert response.status_code == 200
    fresh = response.json()
    assert fresh["refresh_token"] != grant["refresh_token"]
    assert fresh["session_id"] == grant["session_id"]
    assert (await client.get("/api/devices", headers=bearer(fresh))).status_code == 200


async def test_reused_refresh_token_revokes_the_session(client: httpx.AsyncClient) -> None:
    """Presenting a spent refresh token answers 401 and kills the whole session."""
    grant = await signed_in(client)
    fresh = (await refresh(client, grant["refresh_token"])).json()
    reuse = await refresh(client, grant["refresh_token"])
    assert reuse.status_code == 401 and reuse.json()["error"] == "invalid_token"
    assert (await refresh(client, fresh["refresh_token"])).status_code == 401
    assert (await client.get("/api/devices", headers=bearer(fresh))).status_code == 401


async def test_unknown_refresh_token_is_refused(client: httpx.AsyncClient) -> None:
    """A made-up refresh token is 401."""
    assert (await refresh(client, "not-a-token")).status_code == 401


async def test_expired_refresh_token_is_refused(client: httpx.AsyncClient, wall: WallClock) -> None:
    """After refresh_token_ttl the refresh token no longer works."""
    grant = await signed_in(client)
    wall.advance(2_592_000)
    assert (await refresh(client, grant["refresh_token"])).status_code == 401


async def test_logout_revokes_access_and_refresh(client: httpx.AsyncClient) -> None:
    """After logout the access token is refused at once and the refresh token is dead."""
    grant = await signed_in(client)
    assert (await client.post("/api/logout", headers=bearer(grant))).status_code == 204
    assert (await client.get("/api/devices", headers=bearer(grant))).status_code == 401
    assert (await refresh(client, grant["refresh_token"])).status_code == 401


async def test_logout_leaves_other_sessions_alone(client: httpx.AsyncClient) -> None:
    """Only the caller's session ends."""
    grant = await signed_in(client)
    other = await login(client, "alice")
    await client.post("/api/logout", headers=bearer(grant))
    assert (await client.get("/api/devices", headers=bearer(other))).status_code == 200


async def test_missing_bearer_is_refused(client: httpx.AsyncClient) -> None:
    """No Authorization header: 401 with WWW-Authenticate: Bearer."""
    response = await client.get("/api/devices")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "invalid_token"


async def test_wrong_scheme_is_refused(client: httpx.AsyncClient) -> None:
    """Basic auth (or any non-Bearer scheme) is 401."""
    response = await client.get("/api/devices", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401


async def test_forged_token_is_refused(client: httpx.AsyncClient, wall: WallClock) -> None:
    """A token signed with another secret is 401."""
    grant = await signed_in(client)
    claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-of-sufficient-length!!", algorithm="HS256")
    response = await client.get("/api/devices", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


async def test_alg_none_token_is_refused(client: httpx.AsyncClient) -> None:
    """An unsigned token with valid claims is 401."""
    grant = await signed_in(client)
    claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    response = await client.get("/api/devices", headers={"Authorization": f"Bearer {unsigned}"})
    assert response.status_code == 401


async def test_expired_access_token_is_refused(client: httpx.AsyncClient, wall: WallClock) -> None:
    """After access_token_ttl the access token is 401 (and refresh still works)."""
    grant = await signed_in(client)
    wall.advance(900)
    assert (await client.get("/api/devices", headers=bearer(grant))).status_code == 401
    assert (await refresh(client, grant["refresh_token"])).status_code == 200


async def test_token_with_right_secret_and_right_claims_is_accepted(
    client: httpx.AsyncClient, wall: WallClock
) -> None:
    """Control for the forgery tests: the same claims signed with the secret pass."""
    grant = await signed_in(client)
    claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    response = await client.get("/api/devices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_sessions_lists_the_accounts_sessions(client: httpx.AsyncClient) -> None:
    """GET /api/sessions shows every active session, marking the caller's."""
    grant = await signed_in(client)
    other = await login(client, "alice")
    sessions = (await client.get("/api/sessions", headers=bearer(grant))).json()["sessions"]
    assert {s["session_id"] for s in sessions} == {grant["session_id"], other["session_id"]}
    assert [s["current"] for s in sessions if s["session_id"] == grant["session_id"]] == [True]


async def test_deleting_a_session_revokes_it(client: httpx.AsyncClient) -> None:
    """DELETE /api/sessions/{id} ends that session's tokens."""
    grant = await signed_in(client)
    other = await login(client, "alice")
    response = await client.delete(f"/api/sessions/{other['session_id']}", headers=bearer(grant))
    assert response.status_code == 204
    assert (await client.get("/api/devices", headers=bearer(other))).status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 401


async def test_cannot_delete_another_accounts_session(client: httpx.AsyncClient) -> None:
    """Bob's session id is 404 to alice and stays alive."""
    alice = await signed_in(client)
    bob = await signed_in(client, "bob")
    response = await client.delete(f"/api/sessions/{bob['session_id']}", headers=bearer(alice))
    assert response.status_code == 404
    assert (await client.get("/api/devices", headers=bearer(bob))).status_code == 200


async def test_deleting_a_device_revokes_its_sessions(client: httpx.AsyncClient) -> None:
    """DELETE /api/devices/{id} removes it and kills its tokens."""
    grant = await signed_in(client)
    tablet = await login(client, "alice", device_name="tablet")
    response = await client.delete(f"/api/devices/{tablet['device_id']}", headers=bearer(grant))
    assert response.status_code == 204
    assert (await client.get("/api/devices", headers=bearer(tablet))).status_code == 401
    devices = (await client.get("/api/devices", headers=bearer(grant))).json()["devices"]
    assert [d["device_id"] for d in devices] == [grant["device_id"]]


async def test_cannot_delete_another_accounts_device(client: httpx.AsyncClient) -> None:
    """Bob's device is 404 to alice."""
    alice = await signed_in(client)
    bob = await signed_in(client, "bob")
    response = await client.delete(f"/api/devices/{bob['device_id']}", headers=bearer(alice))
    assert response.status_code == 404


async def test_revocation_survives_a_restart(
    relay: Relay, client: httpx.AsyncClient, wall: WallClock
) -> None:
    """A logged-out access token is still refused by a new process on the same store."""
    grant = await signed_in(client)
    await client.post("/api/logout", headers=bearer(grant))
    async with open_services(relay.services.config, wall_clock=wall) as fresh:
        with pytest.raises(InvalidToken) as caught:
            await fresh.auth.authenticate(grant["access_token"])
    assert caught.value.reason == "revoked"


async def test_refresh_cannot_extend_a_session_past_its_max_age(
    relay_with: RelayFactory, wall: WallClock
) -> None:
    """Refreshed daily, a session still ends auth.session_max_age after its login."""
    _, http = await relay_with(auth__session_max_age=3 * 86_400)
    grant = await signed_in(http)
    for _ in range(2):
        wall.advance(86_400)
        response = await refresh(http, grant["refresh_token"])
        assert response.status_code == 200, response.text
        grant = response.json()
    wall.advance(86_400)
    assert (await refresh(http, grant["refresh_token"])).status_code == 401


async def test_access_tokens_never_outlive_the_session(
    relay_with: RelayFactory, wall: WallClock
) -> None:
    """An access token issued a minute before the session's end expires with it."""
    _, http = await relay_with(auth__session_max_age=3_600)
    grant = await signed_in(http)
    wall.advance(3_540)
    fresh = (await refresh(http, grant["refresh_token"])).json()
    assert fresh["expires_in"] == 60
