"""The account's lifecycle over HTTP: passwords, log out everywhere, deletion, last seen."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import PASSWORD, Relay, WallClock, bearer, login, register, signed_up
from tests.keyhelpers import make_device_keys
from tests.wsclient import connect

NEW_PASSWORD = "a brand new password"


async def change(
    http: httpx.AsyncClient, grant: dict[str, Any], old: str, new: str
) -> httpx.Response:
    return await http.post(
        "/api/account/password",
        json={"old_password": old, "new_password": new},
        headers=bearer(grant),
    )


async def devices(http: httpx.AsyncClient, grant: dict[str, Any]) -> httpx.Response:
    return await http.get("/api/devices", headers=bearer(grant))


async def test_changing_the_password_ends_every_other_session(
    relay: Relay, client: httpx.AsyncClient
) -> None:
    """204; the other device's token is refused and its socket closes 4003; the caller stays."""
    laptop = await signed_up(client, "alice")
    phone = await login(client, "alice", device_name="phone")
    async with connect(relay, phone["access_token"]) as ws:
        await ws.expect("ready")
        assert (await change(client, laptop, PASSWORD, NEW_PASSWORD)).status_code == 204
        assert await ws.closed_with() == 4003
    assert (await devices(client, phone)).status_code == 401
    assert (await devices(client, laptop)).status_code == 200
    old = await client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    assert (await login(client, "alice", NEW_PASSWORD))["access_token"]


async def test_a_wrong_old_password_is_401_and_changes_nothing(client: httpx.AsyncClient) -> None:
    """401 invalid_credentials; the password and the sessions stay as they were."""
    grant = await signed_up(client, "alice")
    response = await change(client, grant, "not the password", NEW_PASSWORD)
    assert response.status_code == 401 and response.json()["error"] == "invalid_credentials"
    assert (await login(client, "alice"))["access_token"]
    assert (await devices(client, grant)).status_code == 200


async def test_wrong_old_passwords_count_as_failed_logins(client: httpx.AsyncClient) -> None:
    """A stolen token cannot guess the password: five wrong ones lock it like logins do."""
    grant = await signed_up(client, "alice")
    for _ in range(5):
        await change(client, grant, "guess guess", NEW_PASSWORD)
    locked = await change(client, grant, PASSWORD, NEW_PASSWORD)
    assert locked.status_code == 429 and locked.json()["error"] == "locked_out"


async def test_a_new_password_must_be_long_enough(client: httpx.AsyncClient) -> None:
    """The password rules apply to a change too (400 invalid_password)."""
    grant = await signed_up(client, "alice")
    response = await change(client, grant, PASSWORD, "short")
    assert response.status_code == 400 and response.json()["error"] == "invalid_password"


async def test_logout_everywhere_ends_every_session_the_callers_too(
    relay: Relay, client: httpx.AsyncClient
) -> None:
    """204; both devices' tokens are refused and both sockets close with 4003."""
    laptop = await signed_up(client, "alice")
    phone = await login(client, "alice", device_name="phone")
    async with connect(relay, phone["access_token"]) as on_phone, connect(
        relay, laptop["access_token"]
    ) as on_laptop:
        await on_phone.expect("ready")
        await on_laptop.expect("ready")
        response = await client.post("/api/logout/all", headers=bearer(laptop))
        assert response.status_code == 204
        assert await on_phone.closed_with() == 4003
        assert await on_laptop.closed_with() == 4003
    for grant in (laptop, phone):
        assert (await devices(client, grant)).status_code == 401
        refresh = await client.post(
            "/api/token/refresh", json={"refresh_token": grant["refresh_token"]}
        )
        assert refresh.status_code == 401


async def delete(http: httpx.AsyncClient, grant: dict[str, Any], password: str) -> httpx.Response:
    return await http.post(
        "/api/account/delete", json={"password": password}, headers=bearer(grant)
    )


async def test_deleting_the_account_takes_everything_with_it(
    relay: Relay, client: httpx.AsyncClient
) -> None:
    """204; login fails, the socket closes 4003, and what others sent it is gone."""
    bob = await signed_up(client, "bob")
    alice = await signed_up(client, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="for bob")
        await a.expect("accepted")
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        await b.expect("message")
        assert (await delete(client, bob, PASSWORD)).status_code == 204
        assert await b.closed_with() == 4003
    store = relay.services.store
    assert await store.get_user_by_name("bob") is None
    assert await store.pending(bob["device_id"], 0, 10) == []
    gone = await client.post("/api/login", json={"username": "bob", "password": PASSWORD})
    assert gone.status_code == 401
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c2", to="bob", body="anyone?")
        assert (await a.expect("error"))["code"] == "unknown_recipient"


async def test_deleting_needs_the_right_password(client: httpx.AsyncClient) -> None:
    """401 invalid_credentials for a wrong password; the account stays."""
    grant = await signed_up(client, "alice")
    response = await delete(client, grant, "not the password")
    assert response.status_code == 401 and response.json()["error"] == "invalid_credentials"
    assert (await login(client, "alice"))["access_token"]


async def test_a_deleted_username_is_quarantined(
    client: httpx.AsyncClient, wall: WallClock
) -> None:
    """Nobody can take the name for auth.username_quarantine (90 days); then anyone can."""
    grant = await signed_up(client, "alice")
    await delete(client, grant, PASSWORD)
    again = await client.post(
        "/api/accounts", json={"username": "alice", "password": PASSWORD}
    )
    assert again.status_code == 409 and again.json()["error"] == "username_taken"
    wall.advance(90 * 86_400)
    assert await register(client, "alice")


async def test_deleting_a_device_takes_its_keys_and_queue(
    relay: Relay, client: httpx.AsyncClient
) -> None:
    """The device's one-time prekeys and queued messages go with it."""
    bob = await signed_up(client, "bob")
    alice = await signed_up(client, "alice")
    body, _ = make_device_keys(5)
    upload = await client.put("/api/keys", json=body, headers=bearer(bob))
    assert upload.status_code == 200, upload.text
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="queued")
        await a.expect("accepted")
    store = relay.services.store
    assert len(await store.pending(bob["device_id"], 0, 10)) == 1
    extra = await login(client, "bob", device_name="tablet")
    deleted = await client.delete(f"/api/devices/{bob['device_id']}", headers=bearer(extra))
    assert deleted.status_code == 204
    assert await store.pending(bob["device_id"], 0, 10) == []
    assert (await store.prekey_status(bob["device_id"])).one_time_prekeys == 0
    keys = await client.get("/api/keys/bob", headers=bearer(alice))
    assert keys.status_code == 404 and keys.json()["error"] == "no_keys"


async def test_devices_report_when_they_were_last_seen(
    relay: Relay, client: httpx.AsyncClient, wall: WallClock
) -> None:
    """last_seen_at moves with the device's use (requests, connections), not stuck at creation."""
    grant = await signed_up(client, "alice")
    created = (await devices(client, grant)).json()["devices"][0]["created_at"]
    wall.advance(600)
    async with connect(relay, grant["access_token"]) as ws:
        await ws.expect("ready")
    listed = (await devices(client, grant)).json()["devices"][0]
    assert listed["created_at"] == created
    assert listed["last_seen_at"] == created + 600
