"""POST /api/accounts and /api/login over a real socket."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PASSWORD, RelayFactory, bearer, login, register, signed_up


async def test_register_creates_an_account(client: httpx.AsyncClient) -> None:
    """201 with the user id and the case-folded username."""
    response = await client.post("/api/accounts", json={"username": "Alice", "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "alice" and body["user_id"]


async def test_register_refuses_a_taken_username_in_any_case(client: httpx.AsyncClient) -> None:
    """409 username_taken, whatever the case."""
    await register(client, "alice")
    response = await client.post("/api/accounts", json={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json()["error"] == "username_taken"


@pytest.mark.parametrize(
    "username", ["ab", "a" * 33, "has space", "émile", "semi;colon", "count", "COUNT"]
)
async def test_register_refuses_a_bad_username(client: httpx.AsyncClient, username: str) -> None:
    """Usernames are 3-32 chars of a-z 0-9 _ . - and not a reserved path word."""
    response = await client.post("/api/accounts", json={"username": username, "password": PASSWORD})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_username"


@pytest.mark.parametrize("password", ["short", "x" * 1025])
async def test_register_refuses_a_bad_password_length(
    client: httpx.AsyncClient, password: str
) -> None:
    """Passwords are 8-1024 characters."""
    response = await client.post("/api/accounts", json={"username": "bob", "password": password})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_password"


async def test_registration_can_be_closed(relay_with: RelayFactory) -> None:
    """open_registration = false answers 403 registration_closed."""
    _, http = await relay_with(auth__open_registration=False)
    response = await http.post("/api/accounts", json={"username": "bob", "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["error"] == "registration_closed"


async def test_login_without_device_registers_one(client: httpx.AsyncClient) -> None:
    """A first login returns a Bearer pair and a new device id."""
    user_id = await register(client, "alice")
    grant = await login(client, "alice", device_name="phone")
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 900
    assert grant["user_id"] == user_id
    assert {"access_token", "refresh_token", "device_id", "session_id"} <= set(grant)
    devices = (await client.get("/api/devices", headers=bearer(grant))).json()["devices"]
    assert [(d["device_id"], d["name"]) for d in devices] == [(grant["device_id"], "phone")]


async def test_login_with_device_id_reuses_the_device(client: httpx.AsyncClient) -> None:
    """Logging in again on a known device opens a new session on it."""
    first = await signed_up(client, "alice")
    second = await login(client, "alice", device_id=first["device_id"])
    assert second["device_id"] == first["device_id"]
    assert second["session_id"] != first["session_id"]


async def test_login_username_is_case_insensitive(client: httpx.AsyncClient) -> None:
    """ALICE logs in as alice."""
    await register(client, "alice")
    assert (await login(client, "ALICE"))["device_id"]


async def test_login_with_someone_elses_device_is_refused(client: httpx.AsyncClient) -> None:
    """404 device_not_found for a device of another account."""
    await register(client, "alice")
    bobs = await signed_up(client, "bob")
    response = await client.post(
        "/api/login",
        json={"username": "alice", "password": PASSWORD, "device_id": bobs["device_id"]},
    )
    assert response.status_code == 404
    assert response.json()["error"] == "device_not_found"


async def test_wrong_password_and_unknown_user_answer_the_same(
    client: httpx.AsyncClient,
) -> None:
    """Both are 401 invalid_credentials with the same body."""
    await register(client, "alice")
    wrong = await client.post("/api/login", json={"username": "alice", "password": "wrong-pass"})
    unknown = await client.post("/api/login", json={"username": "nobody", "password": "wrong-pw"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "invalid_credentials"


async def test_device_count_is_capped(relay_with: RelayFactory) -> None:
    """Past max_devices_per_user a new-device login is refused with 409."""
    _, http = await relay_with(auth__max_devices_per_user=2)
    await register(http, "alice")
    await login(http, "alice")
    await login(http, "alice")
    response = await http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json()["error"] == "too_many_devices"


async def test_login_rate_limit_per_ip(relay_with: RelayFactory) -> None:
    """Past LOGIN_RATE_LIMIT_PER_MINUTE an IP gets 429 rate_limited with Retry-After."""
    _, http = await relay_with(auth__login_rate_per_minute=3)
    await register(http, "alice")
    for _ in range(3):
        await login(http, "alice")
    response = await http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) == 20  # one token per 60/3 seconds


async def test_lockout_after_five_failures(client: httpx.AsyncClient) -> None:
    """The sixth attempt after five failures is 429 locked_out, even with the right password."""
    await register(client, "alice")
    for _ in range(5):
        response = await client.post(
            "/api/login", json={"username": "alice", "password": "wrong-pass"}
        )
        assert response.status_code == 401
    response = await client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert response.json()["error"] == "locked_out"
    assert int(response.headers["Retry-After"]) == 900


async def test_lockout_applies_to_unknown_usernames(client: httpx.AsyncClient) -> None:
    """An unknown username locks the same way, so a lockout reveals nothing."""
    for _ in range(5):
        response = await client.post(
            "/api/login", json={"username": "ghost", "password": "wrong-pass"}
        )
        assert response.status_code == 401
    response = await client.post("/api/login", json={"username": "ghost", "password": "any-pass"})
    assert response.status_code == 429
    assert response.json()["error"] == "locked_out"


async def test_lockout_of_one_user_leaves_others_alone(client: httpx.AsyncClient) -> None:
    """Locking alice does not stop bob logging in."""
    await register(client, "bob")
    for _ in range(5):
        await client.post("/api/login", json={"username": "alice", "password": "wrong-pass"})
    assert (await login(client, "bob"))["access_token"]


async def test_a_username_outside_ascii_is_refused_even_if_it_folds_into_it(
    client: httpx.AsyncClient,
) -> None:
    """The Kelvin sign lower-cases to k: still not one of a-z 0-9 _ . -, so 400."""
    response = await client.post(
        "/api/accounts", json={"username": "\u212aelvin", "password": "long enough pw"}
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_username"
