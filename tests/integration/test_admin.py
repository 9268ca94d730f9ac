"""The admin endpoint: off by default, loopback or a token, and what it shows and does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relay.config import ConfigError, load_config
from tests.conftest import PASSWORD, Relay, RelayFactory, bearer, login, signed_up
from tests.wsclient import connect

TOKEN = "admin-token-0123456789-abcdefghijklmnop"


def admin(relay: Relay, token: str | None = None) -> httpx.AsyncClient:
    assert relay.bound.admin_port is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{relay.bound.admin_port}", headers=headers, timeout=10
    )


async def test_the_admin_endpoint_is_off_by_default(relay: Relay) -> None:
    """No [admin] enabled: no admin port at all."""
    assert relay.bound.admin_port is None


async def test_status_shows_connections_queues_and_refusing_limits(
    relay_with: RelayFactory,
) -> None:
    """Connections in total and per user, queue depths, and the limits refusing now."""
    relay, http = await relay_with(admin__enabled=True, admin__port=0)
    alice, bob = await signed_up(http, "alice"), await signed_up(http, "bob")
    for _ in range(5):
        await http.post("/api/login", json={"username": "carol", "password": "wrong wrong"})
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="queued for bob")
        await a.expect("accepted")
        async with admin(relay) as operator:
            status = (await operator.get("/admin/status")).json()
    assert status["connections"]["total"] == 1
    assert status["connections"]["top_users"] == [{"user_id": alice["user_id"], "connections": 1}]
    assert status["stored_queues"] == [
        {"device_id": bob["device_id"], "username": "bob", "messages": 1}
    ]
    assert {"limit": "login_failures", "key": "carol|127.0.0.1"} in [
        {k: r[k] for k in ("limit", "key")} for r in status["limits_refusing"]
    ]
    assert status["version"]


async def test_unlock_lifts_a_users_lockout(relay_with: RelayFactory) -> None:
    """A locked-out owner can log in again once the operator unlocks the name."""
    relay, http = await relay_with(admin__enabled=True, admin__port=0)
    await signed_up(http, "alice")
    for _ in range(5):
        await http.post("/api/login", json={"username": "alice", "password": "wrong wrong"})
    locked = await http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    async with admin(relay) as operator:
        response = await operator.post("/admin/users/alice/unlock")
    assert response.json()["unlocked"] >= 1  # the pair lock (and the name's failure count)
    assert (await login(http, "alice"))["access_token"]


async def test_revoking_sessions_closes_their_sockets(relay_with: RelayFactory) -> None:
    """POST /admin/sessions/revoke: the tokens are refused and the sockets close 4003."""
    relay, http = await relay_with(admin__enabled=True, admin__port=0)
    alice = await signed_up(http, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        async with admin(relay) as operator:
            response = await operator.post(
                "/admin/sessions/revoke", json={"session_ids": [alice["session_id"]]}
            )
        assert response.json() == {"revoked": 1}
        assert await a.closed_with() == 4003
    assert (await http.get("/api/devices", headers=bearer(alice))).status_code == 401


async def test_revoking_sessions_kills_their_refresh_tokens(relay_with: RelayFactory) -> None:
    """POST /admin/sessions/revoke ends the session in the store: refreshing it is 401."""
    relay, http = await relay_with(admin__enabled=True, admin__port=0)
    alice = await signed_up(http, "alice")
    async with admin(relay) as operator:
        await operator.post("/admin/sessions/revoke", json={"session_ids": [alice["session_id"]]})
    refreshed = await http.post(
        "/api/token/refresh", json={"refresh_token": alice["refresh_token"]}
    )
    assert refreshed.status_code == 401


@pytest.mark.parametrize("token", [None, "not-the-token"])
async def test_with_a_token_every_request_must_carry_it(
    relay_with: RelayFactory, token: str | None
) -> None:
    """Without the token (or with another) 401; with it, 200."""
    relay, _ = await relay_with(admin__enabled=True, admin__port=0, admin__token=TOKEN)
    async with admin(relay, token) as stranger:
        assert (await stranger.get("/admin/status")).status_code == 401
        assert (await stranger.get("/metrics")).status_code == 401
    async with admin(relay, TOKEN) as operator:
        assert (await operator.get("/admin/status")).status_code == 200


async def test_metrics_can_leave_the_public_port(relay_with: RelayFactory) -> None:
    """http.metrics = false: 404 on the API port, served on the admin port."""
    relay, http = await relay_with(admin__enabled=True, admin__port=0, http__metrics=False)
    assert (await http.get("/metrics")).status_code == 404
    async with admin(relay) as operator:
        response = await operator.get("/metrics")
    assert response.status_code == 200 and "relay_ws_connections" in response.text


def test_a_public_admin_port_needs_a_token() -> None:
    """Binding the admin endpoint off loopback without a token stops the start."""
    with pytest.raises(ConfigError, match=r"^admin\.token"):
        load_config(env={"RELAY_ADMIN_ENABLED": "true", "RELAY_ADMIN_HOST": "0.0.0.0"})
    config: Any = load_config(
        env={"RELAY_ADMIN_ENABLED": "1", "RELAY_ADMIN_HOST": "0.0.0.0", "RELAY_ADMIN_TOKEN": TOKEN}
    )
    assert config.admin.token == TOKEN
