"""What one host can do to the WebSocket port: resets, idle sockets, connection races."""

from __future__ import annotations

import socket
import struct
from contextlib import AsyncExitStack
from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.conftest import Relay, RelayFactory, login, register, signed_up
from tests.wsclient import connect


def reader_tasks() -> int:
    """trio-websocket reader tasks alive anywhere in this Trio run."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += task.name.endswith("_reader_task")
        pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def raw_upgrade(relay: Relay, token: str) -> tuple[trio.SocketStream, WSConnection]:
    """An authenticated WebSocket over a raw stream, the ``ready`` frame read."""
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    ws = WSConnection(ConnectionType.CLIENT)
    auth = [(b"authorization", b"Bearer " + token.encode())]
    await stream.send_all(ws.send(Request(host="x", target="/ws", extra_headers=auth)))
    accepted = ready = False
    with trio.fail_after(5):
        while not (accepted and ready):
            ws.receive_data(await stream.receive_some(65536))
            for event in ws.events():
                accepted |= isinstance(event, AcceptConnection)
                ready |= isinstance(event, TextMessage) and '"ready"' in event.data
    return stream, ws


def reset(stream: trio.SocketStream) -> None:
    """Close with RST instead of FIN (SO_LINGER 0), like a crashed or hostile peer."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def test_a_peer_that_resets_mid_burst_leaves_no_task_behind(relay: Relay, pair: Any) -> None:
    """Frames left unread when the peer resets must not pin trio-websocket's reader for ever."""
    alice, _ = pair
    for _ in range(5):
        stream, ws = await raw_upgrade(relay, alice["access_token"])
        burst = b"".join(ws.send(TextMessage(data="not json")) for _ in range(200))
        await stream.send_all(burst)
        reset(stream)
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked(cushion=0.5)
    assert reader_tasks() == 0


async def test_one_ip_cannot_hold_more_than_its_pending_sockets(relay_with: RelayFactory) -> None:
    """Silent sockets count as pending; past ws.max_pending_per_ip the next gets 429 at accept."""
    relay, _ = await relay_with(ws__max_pending_per_ip=3)
    silent = [await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port) for _ in range(3)]
    refused = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
    await refused.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_all(refused)).startswith(b"HTTP/1.1 429 ")
    other = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port, local_address="127.0.0.2")
    await other.send_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await read_all(other)
    assert answer.startswith(b"HTTP/1.1 4") and b" 429 " not in answer  # parsed, not shed
    for stream in silent:
        await stream.aclose()


async def test_sockets_that_never_sent_a_request_do_not_delay_shutdown(
    relay_with: RelayFactory,
) -> None:
    """Silent and half-sent upgrade requests are closed at shutdown, not after the 10 s grace."""
    relay, _ = await relay_with()
    silent = [await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port) for _ in range(3)]
    await silent[0].send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # a slowloris
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(2):
        await relay.shutdown()
        for stream in silent:
            assert await read_all(stream) == b""  # closed by the server
            await stream.aclose()


async def test_authenticated_sockets_stop_counting_as_pending(relay_with: RelayFactory) -> None:
    """Once a socket's token is good it frees its pending slot for the next handshake."""
    relay, http = await relay_with(ws__max_pending_per_ip=2)
    grant = await signed_up(http, "alice")
    async with AsyncExitStack() as stack:
        for _ in range(4):
            ws = await stack.enter_async_context(connect(relay, grant["access_token"]))
            await ws.expect("ready")


async def test_simultaneous_handshakes_never_exceed_the_per_user_cap(
    relay_with: RelayFactory,
) -> None:
    """With the user near its cap, a burst of simultaneous handshakes fills it exactly."""
    relay, http = await relay_with(
        ws__max_connections_per_user=5, ws__handshake_burst=100, ws__handshake_rate_per_minute=600
    )
    grant = await signed_up(http, "alice")
    outcomes: list[str] = []
    async with AsyncExitStack() as stack:
        for _ in range(3):
            ws = await stack.enter_async_context(connect(relay, grant["access_token"]))
            await ws.expect("ready")
        all_in, done = trio.Event(), trio.Event()

        def record(outcome: str) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 20:
                all_in.set()

        async def attempt() -> None:
            try:
                async with connect(relay, grant["access_token"]) as ws:
                    await ws.expect("ready")
                    record("ready")
                    await done.wait()  # hold the place until every attempt is in
            except ConnectionRejected as rejected:
                record(str(rejected.status_code))
            except ConnectionClosed:
                record("closed")

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(attempt)
            with trio.fail_after(20):
                await all_in.wait()
            done.set()
    assert sorted(outcomes) == ["503"] * 18 + ["ready"] * 2


async def read_all(stream: trio.SocketStream, timeout: float = 5) -> bytes:
    received = b""
    with trio.fail_after(timeout):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_the_handshake_burst_never_exceeds_the_per_minute_limit(
    relay_with: RelayFactory,
) -> None:
    """With 10 per minute (burst 20 configured), 40 simultaneous handshakes admit at most 10."""
    relay, http = await relay_with(ws__handshake_rate_per_minute=10, ws__handshake_burst=20)
    grant = await signed_up(http, "alice")
    statuses: list[int] = []

    async def attempt() -> None:
        try:
            async with connect(relay, grant["access_token"]) as ws:
                await ws.expect("ready")
                statuses.append(101)
        except ConnectionRejected as rejected:
            statuses.append(rejected.status_code)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(attempt)
    assert statuses.count(101) == 10
    assert statuses.count(429) == 30


async def test_a_users_devices_share_one_send_rate(relay_with: RelayFactory) -> None:
    """Past ws.send_burst_per_user, a second device of the same user is rate limited too."""
    relay, http = await relay_with(
        ws__send_burst=10, ws__send_rate_per_second=0.01,
        ws__send_burst_per_user=15, ws__send_rate_per_user_per_second=0.01,
    )
    await register(http, "alice")
    await register(http, "bob")
    await login(http, "bob")
    answers: list[str] = []
    for device in ("phone", "laptop"):
        grant = await login(http, "alice", device_name=device)
        async with connect(relay, grant["access_token"]) as ws:
            await ws.expect("ready")
            for i in range(10):
                await ws.send(type="send", id=f"{device}{i}", to="bob", body=i)
                frame = await ws.recv()
                answers.append(frame["type"] if frame["type"] != "error" else frame["code"])
    assert answers == ["accepted"] * 15 + ["rate_limited"] * 5


async def test_handshakes_per_user_are_limited_from_any_ip(relay_with: RelayFactory) -> None:
    """ws.handshake_rate_per_user_per_minute holds however many IPs the user comes from."""
    relay, http = await relay_with(ws__handshake_rate_per_user_per_minute=3)
    grant = await signed_up(http, "alice")
    for _ in range(3):
        async with connect(relay, grant["access_token"]) as ws:
            await ws.expect("ready")
    stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port, local_address="127.0.0.9")
    token = grant["access_token"].encode()
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Authorization: Bearer " + token + b"\r\n\r\n"
    )
    assert (await read_all(stream)).startswith(b"HTTP/1.1 429 ")


async def test_a_peer_that_resets_right_after_its_upgrade_request_stops_nothing(
    relay_with: RelayFactory,
) -> None:
    """A socket reset at any point of its handshake costs that socket only.

    Found under a handshake flood: a peer gone before the handler asked the
    socket for its address (ENOTCONN) crashed the whole WebSocket server.
    The reset lands after a varying number of scheduler steps, so that some
    attempt falls in each window between the accept and the handler.
    """
    relay, http = await relay_with(ws__handshake_burst=200, ws__handshake_rate_per_minute=200)
    alice = await signed_up(http, "alice")
    request = WSConnection(ConnectionType.CLIENT).send(
        Request(host="x", target="/ws", extra_headers=[(b"origin", b"http://elsewhere")])
    )
    for steps in range(40):
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", relay.bound.ws_port)
            await stream.send_all(request)
            for _ in range(steps):
                await trio.lowlevel.checkpoint()
            reset(stream)
    await trio.sleep(0.2)
    async with connect(relay, alice["access_token"]) as ws:
        await ws.expect("ready")
