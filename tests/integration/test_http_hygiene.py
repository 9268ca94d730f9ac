"""Request ids, bad input, CORS, health, metrics, and secrets kept out of logs."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import (
    PASSWORD,
    SECRET,
    LogCapture,
    RelayFactory,
    bearer,
    login,
    register,
    signed_up,
)


async def test_request_id_is_generated(client: httpx.AsyncClient) -> None:
    """A response to a request without X-Request-ID carries a new one."""
    response = await client.get("/healthz")
    assert len(response.headers["X-Request-ID"]) >= 16


async def test_sane_request_id_is_propagated(client: httpx.AsyncClient) -> None:
    """The client's X-Request-ID comes back unchanged."""
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "tab\there"])
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    """Over 128 chars or non-printable: a fresh id instead."""
    response = await client.get("/healthz", headers={"X-Request-ID": bad})
    assert response.headers["X-Request-ID"] not in (bad, "")


async def test_errors_carry_a_request_id(client: httpx.AsyncClient) -> None:
    """Even a 404 has X-Request-ID."""
    response = await client.get("/nope", headers={"X-Request-ID": "rid-404"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "rid-404"
    assert response.json()["error"] == "not_found"


async def test_request_id_is_bound_to_the_requests_log_lines(
    client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """A failed login's log line carries that request's id."""
    await client.post(
        "/api/login",
        json={"username": "ghost", "password": "wrong-pass"},
        headers={"X-Request-ID": "rid-login-1"},
    )
    failed = [r for r in logs.records() if r["event"] == "auth.login_failed"]
    assert [r["request_id"] for r in failed] == ["rid-login-1"]


async def test_log_lines_are_json_with_an_event_category(
    client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """Security events are logged under their category."""
    await register(client, "alice")
    for _ in range(6):
        await client.post("/api/login", json={"username": "alice", "password": "wrong-pass"})
    events = logs.events()
    assert "auth.login_failed" in events and "auth.locked_out" in events


BAD_BODIES = [
    (b"{not json", "malformed_json"),
    (b"", "malformed_json"),
    (b'{"username": "\xff\xfe", "password": "x"}', "malformed_json"),
    (b"\xff\xfe\xfd", "malformed_json"),
    (b"[]", "invalid_request"),
    (b'{"username": 5, "password": "longenough"}', "invalid_request"),
    (b'{"username": "alice"}', "invalid_request"),
    (b'{"username": null, "password": "longenough"}', "invalid_request"),
    (b'"just a string"', "invalid_request"),
]


@pytest.mark.parametrize("path", ["/api/accounts", "/api/login"])
@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
async def test_bad_bodies_are_400_with_a_code(
    client: httpx.AsyncClient, path: str, body: bytes, code: str
) -> None:
    """Malformed JSON, non-UTF-8, wrong types and missing fields are 400, never 500."""
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["message"]


async def test_bad_refresh_body_is_400(client: httpx.AsyncClient) -> None:
    """A refresh with no token field is 400 invalid_request."""
    response = await client.post("/api/token/refresh", json={"token": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    """A body over http.max_body_bytes is refused with 413 body_too_large."""
    body = b'{"username": "' + b"a" * 70_000 + b'", "password": "longenough"}'
    response = await client.post("/api/accounts", content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    """GET on a POST route is 405 with the JSON error shape."""
    response = await client.get("/api/login")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_server_still_serves_after_bad_input(client: httpx.AsyncClient) -> None:
    """A burst of garbage leaves the server answering normally."""
    for body, _ in BAD_BODIES:
        await client.post("/api/login", content=body)
    await register(client, "alice")
    assert (await login(client, "alice"))["access_token"]


async def test_cors_preflight_from_an_allowed_origin(client: httpx.AsyncClient) -> None:
    """A preflight from localhost gets the origin echoed, methods and headers."""
    response = await client.options(
        "/api/login",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


async def test_cors_exposes_request_id_and_retry_after(client: httpx.AsyncClient) -> None:
    """Responses to an allowed origin expose X-Request-ID and Retry-After."""
    response = await client.get("/healthz", headers={"Origin": "http://127.0.0.1:5173"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


async def test_cors_ignores_a_foreign_origin(client: httpx.AsyncClient) -> None:
    """No Access-Control-Allow-Origin for an origin off the list, and never '*'."""
    response = await client.options(
        "/api/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_follows_the_configured_allowlist(relay_with: RelayFactory) -> None:
    """With WS_ALLOWED_ORIGINS set, its origins are allowed and localhost no longer is."""
    _, http = await relay_with(ws__allowed_origins=("https://chat.example.com",))
    ok = await http.get("/healthz", headers={"Origin": "https://chat.example.com"})
    local = await http.get("/healthz", headers={"Origin": "http://localhost:3000"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert "Access-Control-Allow-Origin" not in local.headers


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    """Liveness is 200; readiness checks the store, the bus and the limits: 200 when all answer."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "store": "ok", "bus": "ok", "limits": "ok"}


async def test_readyz_is_503_when_the_store_is_gone(client: httpx.AsyncClient, relay) -> None:  # type: ignore[no-untyped-def]
    """A closed store makes /readyz answer 503."""
    await relay.services.store.aclose()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["store"] == "unreachable"


async def test_metrics_count_requests_logins_and_limits(relay_with: RelayFactory) -> None:
    """/metrics shows requests by route and status, login outcomes and rate-limit hits."""
    _, http = await relay_with(auth__login_rate_per_minute=2)
    await register(http, "alice")
    await login(http, "alice")
    await http.post("/api/login", json={"username": "alice", "password": "wrong-pass"})
    await http.post("/api/login", json={"username": "alice", "password": PASSWORD})
    text = (await http.get("/metrics")).text
    assert 'relay_http_requests_total{route="/api/login",status="200"} 1.0' in text
    assert 'relay_http_requests_total{route="/api/accounts",status="201"} 1.0' in text
    assert 'relay_logins_total{outcome="success"} 1.0' in text
    assert 'relay_logins_total{outcome="invalid_credentials"} 1.0' in text
    assert 'relay_ratelimit_hits_total{limit="login"} 1.0' in text


async def test_no_secret_ever_reaches_the_logs(client: httpx.AsyncClient, logs: LogCapture) -> None:
    """Run every auth flow, then grep the logs for passwords, tokens and the JWT secret."""
    grant = await signed_up(client, "alice")
    await client.post("/api/login", json={"username": "alice", "password": "wrong-password-1"})
    fresh = (
        await client.post("/api/token/refresh", json={"refresh_token": grant["refresh_token"]})
    ).json()
    await client.post("/api/token/refresh", json={"refresh_token": grant["refresh_token"]})
    await client.get(f"/api/devices?access_token={fresh['access_token']}")
    await client.get("/api/devices", headers={"Authorization": "Bearer forged.token.value"})
    await client.post("/api/logout", headers=bearer(fresh))
    text = logs.getvalue()
    assert "auth.login" in text and "session.revoked" in text  # the flows did log
    for secret in (
        PASSWORD,
        "wrong-password-1",
        grant["access_token"],
        grant["refresh_token"],
        fresh["access_token"],
        fresh["refresh_token"],
        "forged.token.value",
        SECRET,
    ):
        assert secret not in text
