"""Several ``relay serve`` processes on Redis and PostgreSQL behave as one relay.

Each process listens on ports of its own, so every test says which process
a client talks to: a device on A, another on B. They share one PostgreSQL
schema and one Redis key prefix (the ``cluster`` fixture); the tests that
take an engine away use a proxy (PostgreSQL) or a Redis server of their own.
Skipped, saying why, without PostgreSQL or Redis (failed in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from trio_websocket import open_websocket_url

from tests import pg
from tests.conftest import PASSWORD
from tests.e2e.conftest import Cluster, Node
from tests.e2e.test_ws_process import read_until_closed
from tests.tcpproxy import TcpProxy
from tests.wsclient import WsClient


async def signed_up(node: Node, name: str) -> dict[str, Any]:
    """An account *name* (created if need be) and a new device's tokens, through *node*."""
    async with httpx.AsyncClient(base_url=node.http) as http:
        await http.post("/api/accounts", json={"username": name, "password": PASSWORD})
        response = await http.post("/api/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    return grant


async def login(node: Node, name: str, **extra: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.http) as http:
        return await http.post(
            "/api/login", json={"username": name, "password": PASSWORD, **extra}
        )


@asynccontextmanager
async def device(node: Node, grant: dict[str, Any]) -> AsyncIterator[WsClient]:
    """A socket on *node* for *grant*'s device, past its ``ready``."""
    headers = [("Authorization", f"Bearer {grant['access_token']}")]
    async with open_websocket_url(node.ws, extra_headers=headers) as ws:
        client = WsClient(ws)
        await client.expect("ready")
        yield client


async def messages(client: WsClient, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The next *count* ``message`` frames (acked as they come); other frames are skipped."""
    got: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while len(got) < count:
            frame = await client.recv(timeout)
            if frame["type"] == "message":
                got.append(frame)
                await client.send(type="ack", id=frame["id"])
    return got


async def test_a_message_from_a_device_on_one_process_reaches_a_device_on_another(
    cluster: Cluster,
) -> None:
    """Alice on A sends; Bob on B gets it live, and the ack from B empties his queue."""
    a, b = await cluster.start(), await cluster.start()
    alice, bob = await signed_up(a, "alice"), await signed_up(b, "bob")
    async with device(a, alice) as sender, device(b, bob) as receiver:
        await sender.send(type="send", id="c1", to="bob", body="across")
        accepted = await sender.expect("accepted")
        (message,) = await messages(receiver, 1)
        assert (message["id"], message["from"], message["body"]) == (
            accepted["message_id"], "alice", "across"
        )
    with trio.fail_after(5):  # acks are committed in batches (store.ack_delay)
        while await trio.to_thread.run_sync(queued, cluster, bob["device_id"]):
            await trio.sleep(0.05)


def queued(cluster: Cluster, device_id: str) -> int:
    """How many messages the store holds for *device_id*."""
    with psycopg.connect(cluster.env["RELAY_STORE_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM queue WHERE device_id = %s", (device_id,))
        return int(row.fetchone()[0])  # type: ignore[index]


async def test_messages_from_one_sender_arrive_in_order_across_processes(
    cluster: Cluster,
) -> None:
    """300 sends from Alice on A, 8 in flight: Bob's devices on B and C get them in order."""
    fast = {
        "RELAY_WS_SEND_RATE_PER_SECOND": "10000",
        "RELAY_WS_SEND_BURST": "10000",
        "RELAY_WS_SEND_RATE_PER_USER_PER_SECOND": "10000",
        "RELAY_WS_SEND_BURST_PER_USER": "10000",
    }
    a = await cluster.start(**fast)
    b, c = await cluster.start(), await cluster.start()
    alice = await signed_up(a, "alice")
    bob_b, bob_c = await signed_up(b, "bob"), await signed_up(c, "bob")
    total, window = 300, 8
    received: dict[str, list[int]] = {}
    async with (
        device(a, alice) as sender,
        device(b, bob_b) as on_b,
        device(c, bob_c) as on_c,
        trio.open_nursery() as nursery,
    ):

        async def read(name: str, client: WsClient) -> None:
            received[name] = [m["body"] for m in await messages(client, total, timeout=60)]

        nursery.start_soon(read, "b", on_b)
        nursery.start_soon(read, "c", on_c)
        for i in range(window):
            await sender.send(type="send", id=f"m{i}", to="bob", body=i)
        for i in range(window, total + window):
            await sender.expect("accepted")
            if i < total:  # one more each time one is accepted
                await sender.send(type="send", id=f"m{i}", to="bob", body=i)
    assert received == {"b": list(range(total)), "c": list(range(total))}


async def test_the_handshake_limit_of_one_ip_holds_across_processes(cluster: Cluster) -> None:
    """10 handshakes a minute per IP: the 11th is refused 429, whichever process it reaches."""
    limited = {"WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE": "10"}
    a, b = await cluster.start(**limited), await cluster.start(**limited)
    statuses = [await handshake_status((a, b)[i % 2]) for i in range(12)]
    assert statuses == [101] * 10 + [429, 429]


async def handshake_status(node: Node, token: str | None = None) -> int:
    """The HTTP status a bare WebSocket upgrade gets from *node* (with *token*, if given)."""
    host, port = node.ws.removeprefix("ws://").split("/")[0].split(":")
    bearer = "" if token is None else f"Authorization: Bearer {token}\r\n"
    request = (
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{bearer}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request.encode())
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
    return int(head.split(b" ", 2)[1])


async def test_the_connections_per_user_cap_holds_across_processes_and_outlives_no_process(
    cluster: Cluster,
) -> None:
    """Cap 2: Alice's two sockets on A leave her none on B (503); once A is killed -9,
    its places lapse within ``limits.place_ttl`` (1 s) and B lets her in."""
    capped = {"RELAY_WS_MAX_CONNECTIONS_PER_USER": "2", "RELAY_LIMITS_PLACE_TTL": "1s"}
    a, b = await cluster.start(**capped), await cluster.start(**capped)
    alice = await signed_up(a, "alice")
    async with device(a, alice), device(a, alice):
        assert await handshake_status(b, alice["access_token"]) == 503
        a.child.proc.kill()
        await trio.to_thread.run_sync(a.child.proc.wait, 10)
        killed = trio.current_time()
        with trio.fail_after(5):
            while await handshake_status(b, alice["access_token"]) != 101:
                await trio.sleep(0.1)
        assert trio.current_time() - killed <= 1 + 0.5  # the lease, and the polling's slack


async def test_failed_logins_on_one_process_lock_the_username_on_another(
    cluster: Cluster,
) -> None:
    """Five wrong passwords through A: the right one through B is 429 locked_out."""
    a, b = await cluster.start(), await cluster.start()
    await signed_up(a, "alice")
    async with httpx.AsyncClient(base_url=a.http) as http:
        for _ in range(5):
            wrong = await http.post(
                "/api/login", json={"username": "alice", "password": "not the password"}
            )
            assert wrong.status_code == 401
    refused = await login(b, "alice")
    assert refused.status_code == 429 and refused.json()["error"] == "locked_out"


async def test_a_logout_on_one_process_closes_the_sessions_socket_on_another_within_1s(
    cluster: Cluster,
) -> None:
    """Logout through A's HTTP: the same session's socket on B closes with 4003 in < 1 s."""
    a, b = await cluster.start(), await cluster.start()
    alice = await signed_up(a, "alice")
    async with device(b, alice) as socket_on_b:
        async with httpx.AsyncClient(base_url=a.http) as http:
            bearer = {"Authorization": f"Bearer {alice['access_token']}"}
            assert (await http.post("/api/logout", headers=bearer)).status_code == 204
        assert await socket_on_b.closed_with(timeout=1) == 4003


async def test_kill_9_of_a_process_loses_nothing_it_accepted(cluster: Cluster) -> None:
    """Alice streams to Bob through A; A is SIGKILLed mid-stream; Bob, connecting to B,
    gets every message A answered ``accepted``, in that order."""
    a, b = await cluster.start(), await cluster.start()
    alice, bob = await signed_up(a, "alice"), await signed_up(b, "bob")
    accepted: list[str] = []
    headers = [("Authorization", f"Bearer {alice['access_token']}")]
    async with open_websocket_url(a.ws, extra_headers=headers) as ws:
        await ws.get_message()  # ready
        for i in range(300):
            frame = {"type": "send", "id": f"c{i}", "to": "bob", "body": i}
            await ws.send_message(json.dumps(frame))
        with trio.move_on_after(10):
            while len(accepted) < 150:  # kill with sends still in flight
                frame = json.loads(await ws.get_message())
                if frame["type"] == "accepted":
                    accepted.append(frame["message_id"])
        a.child.proc.kill()
        await trio.to_thread.run_sync(a.child.proc.wait, 10)
        await read_until_closed(ws)
    assert len(accepted) >= 150
    async with device(b, bob) as receiver:
        replayed = [m["id"] for m in await messages(receiver, len(accepted), timeout=20)]
    assert replayed == accepted


# -- an engine goes away ------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` of the test's own (no persistence), to stop and start again."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs the redis-server binary to restart a Redis")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                subprocess.run(["sleep", "0.05"], check=True)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_redis_restart_loses_no_accepted_message_and_the_processes_heal(
    cluster: Cluster, own_redis: RedisServer
) -> None:
    """Redis (no persistence) restarts while Alice on A sends to Bob on B: Bob gets every
    accepted message without reconnecting; both processes become ready again and live
    delivery across them resumes, with no restart."""
    redis = {"RELAY_BUS_URL": own_redis.url, "RELAY_LIMITS_URL": own_redis.url}
    a, b = await cluster.start(**redis), await cluster.start(**redis)
    alice, bob = await signed_up(a, "alice"), await signed_up(b, "bob")
    accepted: list[str] = []
    async with device(a, alice) as sender, device(b, bob) as receiver:

        async def send(first: int, count: int) -> None:
            for i in range(first, first + count):
                await sender.send(type="send", id=f"m{i}", to="bob", body=i)
                accepted.append((await sender.expect("accepted"))["message_id"])

        await send(0, 10)
        got = [m["id"] for m in await messages(receiver, 10)]
        own_redis.stop()
        await send(10, 10)  # while Redis is away: stored, pushes lost
        await trio.to_thread.run_sync(own_redis.start)
        await send(20, 10)
        while len(set(got)) < 30:  # a message pushed before the Resync may come again
            got += [m["id"] for m in await messages(receiver, 1, timeout=20)]
        assert list(dict.fromkeys(got)) == accepted  # every one, in order (the Resync's replay)
        for node in (a, b):
            await ready(node)
        with trio.fail_after(1):  # live again: no reconnect, no poll
            await send(30, 1)
            assert [m["id"] for m in await messages(receiver, 1)] == accepted[30:]


async def ready(node: Node, within: float = 10) -> None:
    async with httpx.AsyncClient(base_url=node.http) as http:
        with trio.fail_after(within):
            while (await http.get("/readyz")).status_code != 200:
                await trio.sleep(0.1)


async def test_an_unreachable_postgres_refuses_sends_and_service_resumes(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    """PostgreSQL cut away: a send is refused store_unavailable (not accepted, and never
    delivered), HTTP answers 503; PostgreSQL back: the same send is accepted and delivered,
    with no restart."""
    proxy = TcpProxy(*pg.target())
    await proxy.start(nursery)
    dsn = pg.Schema("", cluster.env["RELAY_STORE_DSN"]).via(proxy.port)
    fast = {"RELAY_STORE_DSN": dsn, "RELAY_STORE_BUSY_TIMEOUT": "1s"}
    a, b = await cluster.start(**fast), await cluster.start(**fast)
    alice, bob = await signed_up(a, "alice"), await signed_up(b, "bob")
    async with device(a, alice) as sender, device(b, bob) as receiver:
        await proxy.stop()
        refused_body = "while the store is away"
        await sender.send(type="send", id="during", to="bob", body=refused_body)
        refused = await sender.expect("error", timeout=15)
        assert (refused["code"], refused["ref"]) == ("store_unavailable", "during")
        async with httpx.AsyncClient(base_url=b.http) as http:
            bearer = {"Authorization": f"Bearer {bob['access_token']}"}
            response = await http.get("/api/devices", headers=bearer)
            assert response.status_code == 503
            assert response.json()["error"] == "store_unavailable"
        await proxy.start()
        with trio.fail_after(30):
            while True:  # the client's part: resend with the same id after a backoff
                await sender.send(type="send", id="during", to="bob", body=refused_body)
                answer = await sender.recv(timeout=15)
                if answer["type"] == "accepted":
                    break
                assert answer["code"] == "store_unavailable"
                await trio.sleep(0.5)
        (message,) = await messages(receiver, 1, timeout=15)
        assert message["body"] == refused_body


# -- relay serve --workers ------------------------------------------------------------


async def test_a_killed_worker_is_restarted_and_logged(cluster: Cluster, spawn: Any) -> None:
    """kill -9 of one of two workers: the supervisor logs its exit and starts it again."""
    supervisor = spawn(["serve", "--workers", "2"], on_free_ports(cluster.env))
    started = [
        await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.worker_started")
        for _ in range(2)
    ]
    for _ in range(2):
        await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.listening")
    victim = started[0]
    os.kill(victim["pid"], signal.SIGKILL)
    exited = await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.worker_exited")
    assert (exited["worker"], exited["code"]) == (victim["worker"], -signal.SIGKILL)
    again = await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.worker_started")
    assert again["worker"] == victim["worker"] and again["pid"] != victim["pid"]
    listening = await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.listening")
    assert listening["worker"] == victim["worker"]
    code = await trio.to_thread.run_sync(supervisor.signal, signal.SIGTERM)
    assert code == 0


async def test_workers_stop_when_their_supervisor_is_killed(cluster: Cluster, spawn: Any) -> None:
    """kill -9 of the supervisor: no worker is left serving, orphaned (each drains and exits)."""
    supervisor = spawn(["serve", "--workers", "2"], on_free_ports(cluster.env))
    pids = [
        (await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.worker_started"))["pid"]
        for _ in range(2)
    ]
    for _ in range(2):
        await trio.to_thread.run_sync(supervisor.wait_for_event, "relay.listening")
    supervisor.kill()
    with trio.fail_after(15):
        while any(alive(pid) for pid in pids):
            await trio.sleep(0.1)


def on_free_ports(env: dict[str, str]) -> dict[str, str]:
    """*env* with an HTTP and a WebSocket port nobody uses (the workers share them)."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(str(probe.getsockname()[1]))
    return env | {"RELAY_HTTP_PORT": ports[0], "RELAY_WS_PORT": ports[1]}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
