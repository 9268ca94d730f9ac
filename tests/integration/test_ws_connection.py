"""Per-connection behaviour: bad frames, limits, slow readers, revocation, expiry."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from relay.app import open_services
from tests.conftest import (
    Relay,
    RelayFactory,
    WallClock,
    alice_and_bob,
    bearer,
    closes,
    login,
    register,
    signed_up,
    start_relay,
)
from tests.wsclient import connect

BAD_FRAMES = [
    ("not json", "malformed_json", None),
    ('["send"]', "unknown_type", None),
    ('{"type":"shout"}', "unknown_type", None),
    ('{"id":"c1","to":"bob","body":1}', "unknown_type", None),
    ('{"type":"send","id":"c1","body":"x"}', "invalid_frame", "c1"),
    ('{"type":"send","id":"c1","to":5,"body":"x"}', "invalid_frame", "c1"),
    ('{"type":"send","id":"c1","to":"bob","body":null}', "invalid_frame", "c1"),
    ('{"type":"send","id":"' + "x" * 65 + '","to":"bob","body":"x"}', "id_too_long", None),
    ('{"type":"ack"}', "invalid_frame", None),
    ('{"type":"refresh","token":7}', "invalid_frame", None),
]

QUIET_HEARTBEAT = 10_000
"""ws.heartbeat_interval (s) for a test about something else: no ping while it runs."""


@pytest.mark.parametrize(("raw", "code", "ref"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_and_the_connection_stays(
    relay: Relay, pair: Any, raw: str, code: str, ref: str | None
) -> None:
    """Each class of bad frame is answered with its code (and ref); sending still works."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.ws.send_message(raw)
        error = await a.expect("error")
        assert error["code"] == code
        assert error.get("ref") == ref
        await a.send(type="send", id="after", to="bob", body="still here")
        assert (await a.expect("accepted"))["id"] == "after"


async def test_binary_frame_is_refused(relay: Relay, pair: Any) -> None:
    """The protocol is JSON text; a binary frame gets error binary_frame."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.ws.send_message(b'{"type":"ack","id":"x"}')
        assert (await a.expect("error"))["code"] == "binary_frame"


async def test_auth_frame_on_an_authenticated_connection_is_refused(
    relay: Relay, pair: Any
) -> None:
    """A second auth frame is an error, not a re-login."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="auth", token=alice["access_token"])
        assert (await a.expect("error"))["code"] == "already_authenticated"


async def test_repeated_bad_frames_close_with_1008(relay_with: RelayFactory) -> None:
    """ws.bad_frame_limit refusals in a row close the connection with 1008."""
    relay, http = await relay_with(ws__bad_frame_limit=3)
    alice = await signed_up(http, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for _ in range(4):
            await a.ws.send_message("junk")
        assert await a.closed_with() == 1008


async def test_oversized_frame_closes_with_1009(relay_with: RelayFactory) -> None:
    """A frame over ws.max_frame_bytes closes the connection with 1009."""
    relay, http = await relay_with(ws__max_frame_bytes=1024)
    alice = await signed_up(http, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="big", to="alice", body="x" * 2000)
        assert await a.closed_with() == 1009


async def test_bad_frames_leave_other_connections_alone(relay: Relay, pair: Any) -> None:
    """A client spewing garbage until closed does not disturb another's delivery."""
    alice, bob = pair
    async with connect(relay, bob["access_token"]) as b, connect(relay, alice["access_token"]) as a:
        await b.expect("ready")
        await a.expect("ready")
        with contextlib.suppress(ConnectionClosed):
            for _ in range(20):
                await b.ws.send_message("junk")
        assert await b.closed_with() == 1008
        await a.send(type="send", id="c1", to="bob", body="hello")
        await a.expect("accepted")
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        assert (await b.expect("message"))["body"] == "hello"


async def test_handler_error_closes_only_that_connection_with_1011(
    relay: Relay, pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit by one connection closes it with 1011; the others carry on."""
    alice, bob = pair
    limits = relay.services.limits
    original = limits.take

    async def broken_for_alice(limit: str, key: str, cost: float = 1.0) -> float | None:
        if key == alice["device_id"]:
            raise RuntimeError("injected fault")
        return await original(limit, key, cost)

    monkeypatch.setattr(limits, "take", broken_for_alice)
    async with connect(relay, alice["access_token"]) as a, connect(relay, bob["access_token"]) as b:
        await a.expect("ready")
        await b.expect("ready")
        await a.send(type="send", id="boom", to="bob", body="x")
        assert await a.closed_with() == 1011
        await b.send(type="send", id="fine", to="alice", body="x")
        assert (await b.expect("accepted"))["id"] == "fine"


async def test_slow_consumer_is_closed_1013_and_loses_nothing(relay_with: RelayFactory) -> None:
    """A device that stops reading is cut off with 1013; all its messages stay stored."""
    relay, http = await relay_with(
        ws__outbound_queue=4, ws__send_burst=10_000, ws__send_rate_per_second=10_000.0,
        ws__send_burst_per_user=10_000, ws__send_rate_per_user_per_second=10_000.0,
        queue__max_per_sender=10_000,  # loopback buffers here hold ~850 of these messages
    )
    alice, bob = await alice_and_bob(http)
    body = "x" * 60_000
    sent = 0
    async with connect(relay, bob["access_token"], queue_size=1) as b:
        await b.expect("ready")
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            # Bob reads nothing: his socket buffers fill, then his queue, then 1013.
            with trio.move_on_after(30):
                while closes(relay, "1013") == 0:
                    await a.send(type="send", id=f"c{sent}", to="bob", body=body)
                    await a.expect("accepted")
                    sent += 1
            assert closes(relay, "1013") == 1
            await a.send(type="send", id="alive", to="alice", body="x")  # alice unaffected
            await a.expect("error")  # no other alice device: no_devices, but answered
        # The close frame queues behind what Bob never read; when his send
        # buffer stays full it cannot be written, and he sees 1006 instead.
        assert await b.closed_with(timeout=30) in (1013, 1006)
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        received = [json.loads(await b.ws.get_message())["id"] for _ in range(sent)]
    assert len(set(received)) == sent


async def test_logout_closes_the_socket_4003_within_a_second(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """POST /api/logout closes that session's socket with 4003 at once."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await client.post("/api/logout", headers=bearer(alice))
        assert await a.closed_with(timeout=1) == 4003


async def test_session_deletion_closes_the_socket_4003(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """DELETE /api/sessions/{id} from another device closes that session's socket."""
    alice, _ = pair
    other = await login(client, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await client.delete(f"/api/sessions/{alice['session_id']}", headers=bearer(other))
        assert await a.closed_with(timeout=1) == 4003


async def test_device_deletion_closes_the_socket_4003(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """DELETE /api/devices/{id} closes the deleted device's sockets."""
    alice, _ = pair
    other = await login(client, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await client.delete(f"/api/devices/{alice['device_id']}", headers=bearer(other))
        assert await a.closed_with(timeout=1) == 4003


async def test_refresh_reuse_closes_the_socket_4003(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """Refresh-token reuse revokes the session, and its socket goes with it."""
    alice, _ = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for _ in range(2):
            await client.post("/api/token/refresh", json={"refresh_token": alice["refresh_token"]})
        assert await a.closed_with(timeout=1) == 4003


async def test_revocation_leaves_other_sessions_connected(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """Only the revoked session's sockets close."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a, connect(relay, bob["access_token"]) as b:
        await a.expect("ready")
        await b.expect("ready")
        await client.post("/api/logout", headers=bearer(alice))
        assert await a.closed_with(timeout=1) == 4003
        await b.send(type="send", id="c1", to="alice", body="x")
        assert (await b.expect("accepted"))["id"] == "c1"


class TrioWall(WallClock):
    """Wall time that moves with Trio's (mock) clock."""

    def __call__(self) -> float:
        return self.now + trio.current_time()


@pytest.fixture
def trio_wall() -> TrioWall:
    return TrioWall()


async def test_token_expiry_closes_4001(
    config: Any, trio_wall: TrioWall, nursery: trio.Nursery, virtual_clock: trio.abc.Clock
) -> None:
    """An access token expiring on an open connection closes it with 4001 at exp."""
    # No heartbeat before exp: each timer costs the virtual clock a real pause.
    quiet = config.replace(ws__heartbeat_interval=QUIET_HEARTBEAT)
    async with started(quiet, trio_wall, nursery) as (relay, http):
        alice = await signed_up(http, "alice")
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            start = trio.current_time()
            assert await a.closed_with(timeout=2000) == 4001
            assert trio.current_time() - start == pytest.approx(900, abs=1)


async def test_refresh_frame_keeps_the_connection_past_expiry(
    config: Any, trio_wall: TrioWall, nursery: trio.Nursery, virtual_clock: trio.abc.Clock
) -> None:
    """A refresh frame with a newer token of the same session moves the deadline."""
    quiet = config.replace(ws__heartbeat_interval=QUIET_HEARTBEAT)
    async with started(quiet, trio_wall, nursery) as (relay, http):
        alice = await signed_up(http, "alice")
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            await trio.sleep(800)
            fresh = (
                await http.post(
                    "/api/token/refresh", json={"refresh_token": alice["refresh_token"]}
                )
            ).json()
            await a.send(type="refresh", token=fresh["access_token"])
            start = trio.current_time()
            assert await a.closed_with(timeout=5000) == 4001
            assert trio.current_time() - start == pytest.approx(900, abs=2)


async def test_refresh_frame_with_another_sessions_token_is_refused(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """A valid token of a different session does not extend this connection."""
    alice, _ = pair
    other = await login(client, "alice")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="refresh", token=other["access_token"])
        assert (await a.expect("error"))["code"] == "invalid_token"
        await a.send(type="refresh", token="garbage")
        assert (await a.expect("error"))["code"] == "invalid_token"


async def test_heartbeat_closes_a_peer_that_stops_answering(
    config: Any, trio_wall: TrioWall, nursery: trio.Nursery, virtual_clock: trio.abc.Clock
) -> None:
    """No pong within heartbeat_timeout after a ping: closed as too slow (1013), on time."""
    async with started(config, trio_wall, nursery) as (relay, http):
        alice, bob = await alice_and_bob(http)
        async with connect(relay, bob["access_token"], queue_size=1) as b:
            # Bob's client stops reading: its library's queue (1) fills with
            # ready + message, so its reader stops and no pong is sent.
            async with connect(relay, alice["access_token"]) as a:
                await a.expect("ready")
                for i in range(3):
                    await a.send(type="send", id=f"c{i}", to="bob", body=i)
                    await a.expect("accepted")
            start = trio.current_time()
            await trio.sleep(34)  # one leap of the virtual clock, not 34 polls
            assert closes(relay, "1013") == 0
            with trio.fail_after(100):
                while closes(relay, "1013") == 0:
                    await trio.sleep(1)
            # Ping at 25 s, no pong by 35 s: closed then; the close handshake
            # with a silent peer then waits its 2 s before the socket is dropped.
            assert 35 <= trio.current_time() - start <= 35 + 2 + 1
            del b


async def test_heartbeat_keeps_a_responsive_peer(
    config: Any, trio_wall: TrioWall, nursery: trio.Nursery, virtual_clock: trio.abc.Clock
) -> None:
    """A client that answers pings stays connected across several intervals."""
    async with started(config, trio_wall, nursery) as (relay, http):
        alice = await signed_up(http, "alice")
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            with trio.move_on_after(130):  # 5 heartbeats, all answered
                await a.ws.get_message()
            assert closes(relay, "1013") == 0


@asynccontextmanager
async def started(
    config: Any, wall: WallClock, nursery: trio.Nursery
) -> AsyncIterator[tuple[Relay, httpx.AsyncClient]]:
    """A relay whose wall clock follows Trio's clock (for virtual-time tests)."""
    async with open_services(config, wall_clock=wall) as services:
        relay = await start_relay(services, nursery)
        async with httpx.AsyncClient(base_url=relay.http_url, timeout=None) as http:
            yield relay, http
        await relay.shutdown()


async def test_expired_messages_are_swept_while_running(
    config: Any, trio_wall: TrioWall, nursery: trio.Nursery, virtual_clock: trio.abc.Clock
) -> None:
    """The relay's own sweep drops a queued message once queue.ttl has passed."""
    async with started(config.replace(queue__ttl=120), trio_wall, nursery) as (relay, http):
        alice, bob = await alice_and_bob(http)
        async with connect(relay, alice["access_token"]) as a:
            await a.expect("ready")
            await a.send(type="send", id="c1", to="bob", body="soon gone")
            await a.expect("accepted")
        store = relay.services.store
        assert len(await store.pending(bob["device_id"], 0, 10)) == 1
        await trio.sleep(60)
        assert len(await store.pending(bob["device_id"], 0, 10)) == 1  # not yet
        await trio.sleep(130)  # past the ttl and the next one-minute sweep
        assert await store.pending(bob["device_id"], 0, 10) == []


async def test_queue_depths_are_exported(relay: Relay, client: httpx.AsyncClient) -> None:
    """/metrics shows the pipeline and outbound queue depths."""
    text = (await client.get("/metrics")).text
    for name in ("relay_pipeline_queue_depth", "relay_ws_outbound_queued", "relay_ws_connections"):
        assert f"\n{name} " in text


async def test_frames_and_delivery_latency_are_counted(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """A delivered message shows in frames in/out and in the delivery latency histogram."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a, connect(relay, bob["access_token"]) as b:
        await a.expect("ready")
        await b.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="x")
        await a.expect("accepted")
        await b.send(type="ack", id=(await b.expect("message"))["id"])
    text = (await client.get("/metrics")).text
    assert 'relay_ws_frames_in_total{type="send"} 1.0' in text
    assert 'relay_ws_frames_in_total{type="ack"} 1.0' in text
    assert 'relay_ws_frames_out_total{type="message"} 1.0' in text
    assert "relay_delivery_latency_seconds_count 1.0" in text


async def test_every_exit_path_frees_the_registry(
    relay: Relay, client: httpx.AsyncClient, pair: Any
) -> None:
    """Normal close, policy close and revocation all leave no registered connection."""
    alice, bob = pair
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        assert relay.services.metrics.registry.get_sample_value("relay_ws_connections") == 1
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        with contextlib.suppress(ConnectionClosed):
            for _ in range(20):
                await b.ws.send_message("junk")
        assert await b.closed_with() == 1008
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await client.post("/api/logout", headers=bearer(alice))
        assert await a.closed_with() == 4003
    with trio.fail_after(5):  # each handler ends just after its socket is closed
        await trio.testing.wait_all_tasks_blocked()
    assert "\nrelay_ws_connections 0.0" in (await client.get("/metrics")).text


async def test_a_long_replay_does_not_overflow_a_reading_client(relay_with: RelayFactory) -> None:
    """600 queued messages, a queue of 8, the client sending meanwhile: all arrive, in order."""
    relay, http = await relay_with(
        ws__outbound_queue=8, ws__send_burst=10_000, ws__send_rate_per_second=10_000.0,
        ws__send_burst_per_user=10_000, ws__send_rate_per_user_per_second=10_000.0,
    )
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for i in range(600):
            await a.send(type="send", id=f"c{i}", to="bob", body=i)
        for _ in range(600):
            await a.expect("accepted")
        async with connect(relay, bob["access_token"]) as b:
            await b.expect("ready")
            for i in range(50):  # bob talks while his backlog streams in
                await b.send(type="send", id=f"b{i}", to="alice", body=i)
            for i in range(600, 650):  # and alice keeps sending live
                await a.send(type="send", id=f"c{i}", to="bob", body=i)
            bodies, accepted = [], 0
            while len(bodies) < 650 or accepted < 50:
                frame = await b.recv()
                if frame["type"] == "message":
                    bodies.append(frame["body"])
                else:
                    assert frame["type"] == "accepted", frame
                    accepted += 1
    assert bodies == list(range(650))


async def test_send_rate_is_per_device_across_reconnects(relay_with: RelayFactory) -> None:
    """Reconnecting does not refill a device's send bucket."""
    relay, http = await relay_with(ws__send_burst=3, ws__send_rate_per_second=0.01)
    await register(http, "alice")
    await register(http, "bob")
    alice = await login(http, "alice")
    await login(http, "bob")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        for i in range(3):
            await a.send(type="send", id=f"c{i}", to="bob", body="x")
            await a.expect("accepted")
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        await a.send(type="send", id="c3", to="bob", body="x")
        assert (await a.expect("error"))["code"] == "rate_limited"
