"""What one host can send the HTTP port: bad bodies, stuck bodies, many sockets."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import LogCapture, Relay, RelayFactory, bearer, login, register, signed_up

NESTED = b"[" * 1000 + b"]" * 1000
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def raw_request(relay: Relay, request: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.http_port)
    await stream.send_all(request)
    return stream


async def read_until_closed(stream: trio.SocketStream, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after *timeout*)."""
    received = b""
    with trio.fail_after(timeout):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


@pytest.mark.parametrize("path", ["/api/accounts", "/api/login", "/api/token/refresh"])
async def test_deeply_nested_json_is_400_invalid_json(
    client: httpx.AsyncClient, logs: LogCapture, path: str
) -> None:
    """A body of 1,000 nested arrays is refused as invalid_json, not a 500 with a traceback."""
    response = await client.post(path, content=NESTED)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_json"
    assert "http.internal_error" not in logs.events()


async def test_deeply_nested_key_upload_is_400_invalid_json(
    client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """PUT /api/keys with 1,000 nested arrays is invalid_json too."""
    grant = await signed_up(client, "alice")
    response = await client.put("/api/keys", content=NESTED, headers=bearer(grant))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_json"
    assert "http.internal_error" not in logs.events()


async def test_413_closes_the_connection(relay: Relay) -> None:
    """A declared body over the cap is answered 413 with Connection: close, then closed."""
    stream = await raw_request(
        relay,
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    )
    answer = await read_until_closed(stream, timeout=5)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413")
    assert b"connection: close" in head


async def test_a_request_whose_body_never_comes_is_408_and_closed(
    relay_with: RelayFactory, virtual_clock: trio.abc.Clock
) -> None:
    """A declared body that never arrives gets 408 after http.request_timeout, then a close."""
    relay, _ = await relay_with(http__request_timeout=20.0, http__idle_timeout=60.0)
    stream = await raw_request(
        relay, b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    )
    start = trio.current_time()
    answer = await read_until_closed(stream, timeout=120)
    assert answer.lower().startswith(b"http/1.1 408")
    assert trio.current_time() - start == pytest.approx(20, abs=1)


async def test_a_silent_connection_is_closed_after_the_idle_timeout(
    relay_with: RelayFactory, virtual_clock: trio.abc.Clock
) -> None:
    """A socket that never sends a byte is hung up after http.idle_timeout."""
    relay, _ = await relay_with(http__idle_timeout=15.0)
    stream = await raw_request(relay, b"")
    start = trio.current_time()
    assert await read_until_closed(stream, timeout=120) == b""
    assert trio.current_time() - start == pytest.approx(15, abs=1)


async def test_one_ip_cannot_hold_more_than_its_connections(
    relay_with: RelayFactory,
) -> None:
    """Past http.max_connections_per_ip, a source's next socket gets 429 and is closed."""
    relay, _ = await relay_with(http__max_connections_per_ip=5)
    held = [await raw_request(relay, b"") for _ in range(5)]
    refused = await raw_request(relay, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await read_until_closed(refused, timeout=5)
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert b'"error":"too_many_connections"' in answer
    port = relay.bound.http_port
    other = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
    await other.send_all(HEALTHZ)
    assert (await read_until_closed(other, timeout=5)).startswith(b"HTTP/1.1 200")
    for stream in held:
        await stream.aclose()


async def test_a_freed_connection_slot_is_reused(relay_with: RelayFactory) -> None:
    """Once a held socket closes, its source may open another."""
    relay, _ = await relay_with(http__max_connections_per_ip=1)
    first = await raw_request(relay, HEALTHZ)
    assert (await read_until_closed(first, timeout=5)).startswith(b"HTTP/1.1 200")
    await first.aclose()
    with trio.fail_after(5):  # the server's handler ends just after its side is closed
        await trio.testing.wait_all_tasks_blocked()
    answer = await read_until_closed(await raw_request(relay, HEALTHZ), timeout=5)
    assert answer.startswith(b"HTTP/1.1 200")


async def test_the_socket_budget_is_shared_by_both_ports(relay_with: RelayFactory) -> None:
    """With server.max_open_sockets held, HTTP and WebSocket both answer 503 at accept."""
    relay, _ = await relay_with(server__max_open_sockets=4)
    held = [await raw_request(relay, b"") for _ in range(4)]
    http = await raw_request(relay, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_until_closed(http, timeout=5)).startswith(b"HTTP/1.1 503 ")
    ws = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    await ws.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_until_closed(ws, timeout=5)).startswith(b"HTTP/1.1 503 ")
    for stream in held:
        await stream.aclose()


async def test_registrations_are_limited_per_ip(relay_with: RelayFactory) -> None:
    """150 concurrent registrations from one IP create only auth.registration_rate_per_hour."""
    _, http = await relay_with(auth__registration_rate_per_hour=5)
    statuses: list[int] = []

    async def attempt(i: int) -> None:
        response = await http.post(
            "/api/accounts", json={"username": f"bot{i}", "password": "bot password"}
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"] == "rate_limited"
            assert int(response.headers["Retry-After"]) > 0

    async with trio.open_nursery() as nursery:
        for i in range(150):
            nursery.start_soon(attempt, i)
    assert statuses.count(201) == 5
    assert statuses.count(429) == 145


async def test_a_registration_flood_leaves_logins_served(relay_with: RelayFactory) -> None:
    """While another IP's registrations are throttled, a user's login succeeds promptly."""
    _, http = await relay_with(auth__registration_rate_per_hour=2)
    await register(http, "alice")

    async def bot(i: int) -> None:
        await http.post("/api/accounts", json={"username": f"bot{i}", "password": "pw pw pw pw"})

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(bot, i)
        with trio.fail_after(10):
            assert (await login(http, "alice"))["access_token"]


async def test_405_names_the_allowed_methods(client: httpx.AsyncClient) -> None:
    """A wrong method is 405 with the Allow header RFC 9110 asks for."""
    response = await client.get("/api/login")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"].split(", ")


async def test_there_is_no_static_route(client: httpx.AsyncClient) -> None:
    """No file serving: /static/... is an unknown route like any other."""
    assert (await client.get("/static/x")).json()["error"] == "not_found"
