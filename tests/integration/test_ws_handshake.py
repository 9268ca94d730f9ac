"""The handshake gate: every way in, and every refusal before the upgrade."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected

from tests.conftest import (
    LogCapture,
    Relay,
    RelayFactory,
    WallClock,
    bearer,
    signed_up,
)
from tests.wsclient import connect


async def account(client: httpx.AsyncClient, name: str = "alice") -> dict[str, Any]:
    return await signed_up(client, name)


async def refused(relay: Relay, token: str | None = None, **options: Any) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as caught:
        async with connect(relay, token, **options):
            pass
    return caught.value


async def test_bearer_token_is_admitted(relay: Relay, client: httpx.AsyncClient) -> None:
    """Authorization: Bearer gets a ready frame naming user, device and session."""
    grant = await account(client)
    async with connect(relay, grant["access_token"]) as ws:
        ready = await ws.expect("ready")
    assert ready == {
        "type": "ready",
        "user": "alice",
        "device": grant["device_id"],
        "session": grant["session_id"],
    }


async def test_query_token_is_admitted(relay: Relay, client: httpx.AsyncClient) -> None:
    """access_token in the query works for browsers."""
    grant = await account(client)
    async with connect(relay, grant["access_token"], via="query") as ws:
        assert (await ws.expect("ready"))["user"] == "alice"


async def test_query_token_is_never_logged(
    relay: Relay, client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """Neither an accepted nor a refused query token reaches the logs."""
    grant = await account(client)
    async with connect(relay, grant["access_token"], via="query") as ws:
        await ws.expect("ready")
    await refused(relay, "not-a-jwt-but-secret", via="query")
    assert grant["access_token"] not in logs.getvalue()
    assert "not-a-jwt-but-secret" not in logs.getvalue()


async def test_auth_frame_is_admitted(relay: Relay, client: httpx.AsyncClient) -> None:
    """No token in the handshake, then a first auth frame: ready."""
    grant = await account(client)
    async with connect(relay) as ws:
        await ws.send(type="auth", token=grant["access_token"])
        assert (await ws.expect("ready"))["device"] == grant["device_id"]


async def test_wrong_auth_frame_closes_4001(relay: Relay) -> None:
    """A bad token in the auth frame closes the connection with 4001."""
    async with connect(relay) as ws:
        await ws.send(type="auth", token="garbage")
        assert await ws.closed_with() == 4001


async def test_other_first_frame_closes_4001(relay: Relay, client: httpx.AsyncClient) -> None:
    """Until authenticated the connection can do nothing else."""
    async with connect(relay) as ws:
        await ws.send(type="send", id="c1", to="alice", body="hi")
        assert await ws.closed_with() == 4001


async def test_missing_auth_frame_times_out_with_4001(
    relay_with: RelayFactory, virtual_clock: trio.abc.Clock
) -> None:
    """Silence for ws.auth_timeout closes with 4001 (virtual time)."""
    relay, _ = await relay_with()
    async with connect(relay) as ws:
        start = trio.current_time()
        assert await ws.closed_with(timeout=60) == 4001
        assert trio.current_time() - start == pytest.approx(5, abs=0.5)


async def test_ack_before_auth_closes_4001(relay: Relay) -> None:
    """An ack as the first frame of an unauthenticated connection closes it with 4001."""
    async with connect(relay) as ws:
        await ws.send(type="ack", id="x")
        assert await ws.closed_with() == 4001


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
async def test_bad_token_is_401(relay: Relay, token: str) -> None:
    """A malformed token is refused with 401 before the upgrade."""
    assert (await refused(relay, token)).status_code == 401


async def test_expired_token_is_401(
    relay: Relay, client: httpx.AsyncClient, wall: WallClock
) -> None:
    """An expired access token is refused."""
    grant = await account(client)
    wall.advance(900)
    assert (await refused(relay, grant["access_token"])).status_code == 401


async def test_revoked_token_is_401(relay: Relay, client: httpx.AsyncClient) -> None:
    """A logged-out session's token is refused at once."""
    grant = await account(client)
    await client.post("/api/logout", headers=bearer(grant))
    assert (await refused(relay, grant["access_token"])).status_code == 401


async def test_wrong_path_is_404(relay: Relay, client: httpx.AsyncClient) -> None:
    """Only /ws upgrades."""
    grant = await account(client)
    assert (await refused(relay, grant["access_token"], path="/other")).status_code == 404


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://127.0.0.1"])
async def test_default_origins_admit_localhost(
    relay: Relay, client: httpx.AsyncClient, origin: str
) -> None:
    """Without WS_ALLOWED_ORIGINS, local origins on any port are admitted."""
    grant = await account(client)
    async with connect(relay, grant["access_token"], origin=origin) as ws:
        await ws.expect("ready")


async def test_foreign_origin_is_403(
    relay: Relay, client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """Any other origin is refused with 403 and logged as ws.origin_rejected."""
    grant = await account(client)
    rejection = await refused(relay, grant["access_token"], origin="https://evil.example")
    assert rejection.status_code == 403
    assert "ws.origin_rejected" in logs.events()


async def test_configured_origins_replace_the_default(
    relay_with: RelayFactory,
) -> None:
    """With an allowlist, its origin is admitted and localhost is refused."""
    relay, http = await relay_with(ws__allowed_origins=("https://chat.example.com",))
    grant = await account(http)
    async with connect(relay, grant["access_token"], origin="https://chat.example.com") as ws:
        await ws.expect("ready")
    local = await refused(relay, grant["access_token"], origin="http://localhost:3000")
    assert local.status_code == 403


async def test_missing_origin_is_admitted_by_default(
    relay: Relay, client: httpx.AsyncClient
) -> None:
    """Non-browser clients send no Origin: admitted unless require_origin."""
    grant = await account(client)
    async with connect(relay, grant["access_token"]) as ws:
        await ws.expect("ready")


async def test_missing_origin_is_403_when_required(relay_with: RelayFactory) -> None:
    """ws.require_origin = true refuses a handshake without Origin."""
    relay, http = await relay_with(ws__require_origin=True)
    grant = await account(http)
    assert (await refused(relay, grant["access_token"])).status_code == 403


async def test_handshake_rate_limit_is_429_with_retry_after(
    relay_with: RelayFactory, logs: LogCapture
) -> None:
    """Past WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE from one IP: 429 and Retry-After."""
    relay, http = await relay_with(ws__handshake_rate_per_minute=2, ws__handshake_burst=2)
    grant = await account(http)
    for _ in range(2):
        async with connect(relay, grant["access_token"]) as ws:
            await ws.expect("ready")
    rejection = await refused(relay, grant["access_token"])
    assert rejection.status_code == 429
    headers = {k.decode().lower(): v.decode() for k, v in rejection.headers}
    assert headers["retry-after"] == "30"  # one handshake per 60/2 seconds
    assert "ratelimit.handshake" in logs.events()


async def test_rate_limit_is_checked_before_the_token(relay_with: RelayFactory) -> None:
    """A flood of bad tokens is refused by the bucket, not by JWT work."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=1, ws__handshake_burst=1)
    assert (await refused(relay, "garbage")).status_code == 401
    assert (await refused(relay, "garbage")).status_code == 429


async def test_global_connection_cap_is_503(relay_with: RelayFactory) -> None:
    """At ws.max_connections open sockets, the next handshake gets 503."""
    relay, http = await relay_with(ws__max_connections=1)
    grant = await account(http)
    async with connect(relay, grant["access_token"]) as ws:
        await ws.expect("ready")
        assert (await refused(relay, grant["access_token"])).status_code == 503


async def test_per_user_connection_cap_is_503(relay_with: RelayFactory) -> None:
    """At ws.max_connections_per_user, that user's next handshake gets 503; others pass."""
    relay, http = await relay_with(ws__max_connections_per_user=1)
    alice = await account(http)
    bob = await account(http, "bob")
    async with connect(relay, alice["access_token"]) as ws:
        await ws.expect("ready")
        assert (await refused(relay, alice["access_token"])).status_code == 503
        async with connect(relay, bob["access_token"]) as other:
            await other.expect("ready")


async def test_a_closed_connection_gives_its_users_place_back(relay_with: RelayFactory) -> None:
    """Cap 1: after the socket closes, and after a refusal, the next handshake gets in."""
    relay, http = await relay_with(ws__max_connections_per_user=1)
    alice = await account(http)
    for _ in range(3):
        with trio.fail_after(5):  # the server gives the place back just after the close
            while True:
                try:
                    async with connect(relay, alice["access_token"]) as ws:
                        await ws.expect("ready")
                        assert (await refused(relay, alice["access_token"])).status_code == 503
                        break
                except ConnectionRejected as rejected:
                    assert rejected.status_code == 503
                    await trio.sleep(0.01)


async def test_slow_handshake_is_dropped(
    relay_with: RelayFactory, virtual_clock: trio.abc.Clock
) -> None:
    """A client that never finishes its HTTP request is disconnected (slowloris)."""
    relay, _ = await relay_with()
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    start = trio.current_time()
    with trio.fail_after(60):
        while await stream.receive_some(1024):
            pass
    assert trio.current_time() - start == pytest.approx(10, abs=0.5)
    await stream.aclose()


async def test_metrics_count_handshakes_by_outcome(relay: Relay, client: httpx.AsyncClient) -> None:
    """relay_ws_handshakes_total counts accepted and refused handshakes."""
    grant = await account(client)
    async with connect(relay, grant["access_token"]) as ws:
        await ws.expect("ready")
    await refused(relay, "garbage")
    text = (await client.get("/metrics")).text
    assert 'relay_ws_handshakes_total{outcome="accepted"} 1.0' in text
    assert 'relay_ws_handshakes_total{outcome="unauthorized"} 1.0' in text


async def test_refused_handshake_is_hung_up_by_the_server(relay: Relay) -> None:
    """After a refusal the server closes the socket itself, even if the client lingers."""
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    await stream.send_all(
        b"GET /ws?access_token=bad HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    received = b""
    with trio.fail_after(2):
        while chunk := await stream.receive_some(1024):
            received += chunk
    assert received.startswith(b"HTTP/1.1 401")
    await stream.aclose()


async def test_query_with_too_many_fields_is_400(relay: Relay) -> None:
    """A handshake URL with more than 16 query fields is refused with 400, not left hanging."""
    query = "&".join(f"f{i}=x" for i in range(17))
    assert (await refused(relay, None, path=f"/ws?{query}")).status_code == 400


async def test_over_limit_sources_are_shed_at_accept(
    relay_with: RelayFactory, logs: LogCapture
) -> None:
    """Once a source's bucket is empty, its next sockets get a canned 429 before parsing."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=1, ws__handshake_burst=1)
    assert (await refused(relay, "garbage")).status_code == 401  # the one allowed
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(2):
            while chunk := await stream.receive_some(1024):
                received += chunk
        await stream.aclose()
        assert received.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert b"Retry-After: 60\r\n" in received
    shed = [r for r in logs.records() if r["event"] == "ratelimit.handshake"]
    assert [r.get("shed") for r in shed] == [True]  # one line, the rest counted


async def test_shedding_one_source_leaves_others_alone(relay_with: RelayFactory) -> None:
    """A flooding IP is shed while another source still gets through."""
    relay, http = await relay_with(ws__handshake_rate_per_minute=1, ws__handshake_burst=1)
    grant = await signed_up(http, "alice")
    await refused(relay, "garbage")
    assert (await refused(relay, "garbage")).status_code == 429
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port, local_address="127.0.0.2")
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Authorization: Bearer " + grant["access_token"].encode() + b"\r\n\r\n"
    )
    with trio.fail_after(2):
        assert (await stream.receive_some(1024)).startswith(b"HTTP/1.1 101")
    await stream.aclose()


async def test_shed_socket_whose_request_is_late_still_gets_its_429(
    relay_with: RelayFactory,
) -> None:
    """A shed client that connects and writes nothing yet is answered once it speaks."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=1, ws__handshake_burst=1)
    await refused(relay, "garbage")
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    await trio.sleep(0.1)  # accepted and found empty-handed: the slow path
    await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    with trio.fail_after(3):
        while chunk := await stream.receive_some(1024):
            received += chunk
    await stream.aclose()
    assert received.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")


async def test_handshake_burst_is_separate_from_the_rate(relay_with: RelayFactory) -> None:
    """ws.handshake_burst handshakes at once, then the per-minute rate: 60/min → 1 s apart."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=60, ws__handshake_burst=3)
    for _ in range(3):
        assert (await refused(relay, "garbage")).status_code == 401
    rejection = await refused(relay, "garbage")
    assert rejection.status_code == 429
    headers = {k.decode().lower(): v.decode() for k, v in rejection.headers}
    assert headers["retry-after"] == "1"
