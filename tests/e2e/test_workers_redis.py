"""``relay serve --workers 2`` on the Redis bus and limits: two real processes as one relay.

The kernel spreads sockets over the workers (``SO_REUSEPORT``); whichever
worker holds a device, a message reaches it and a logout closes it. Skipped,
saying why, when no Redis is reachable.
"""

from __future__ import annotations

import json
import signal
import socket
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.conftest import PASSWORD
from tests.e2e.conftest import secret_env
from tests.wsclient import WsClient

DEVICES = 12  # bob's sockets: all on one worker by chance once in 2,000 runs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def grant(http: str, name: str) -> dict[str, Any]:
    response = httpx.post(f"{http}/api/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_two_workers_deliver_to_devices_on_either_and_close_on_logout(
    redis_url: str, redis_prefix: str, spawn: Any, relay_env: dict[str, str]
) -> None:
    """Alice's message reaches all 12 of Bob's devices across both workers; Bob's
    logout-everywhere closes every one of them with 4003, whichever worker holds it."""
    # (redis_prefix before spawn: the workers are stopped before the prefix is cleaned.)
    http_port, ws_port = free_port(), free_port()
    env = secret_env(relay_env) | {
        "RELAY_HTTP_PORT": str(http_port),
        "RELAY_WS_PORT": str(ws_port),
        "RELAY_LOG_FORMAT": "json",
        "RELAY_BUS_BACKEND": "redis",
        "RELAY_BUS_URL": redis_url,
        "RELAY_BUS_PREFIX": redis_prefix,
        "RELAY_LIMITS_BACKEND": "redis",
        "RELAY_LIMITS_URL": redis_url,
        "RELAY_LIMITS_PREFIX": redis_prefix,
    }
    child = spawn(["serve", "--workers", "2"], env)
    try:
        await exchange(child, f"http://127.0.0.1:{http_port}", f"ws://127.0.0.1:{ws_port}/ws")
        lines = list(child.seen)
        while not child.lines.empty():
            lines.append(child.lines.get_nowait())
        workers = {json.loads(line).get("worker") for line in lines if '"ws.connected"' in line}
        assert workers == {0, 1}  # the sockets really were spread over both workers
        assert child.signal(signal.SIGTERM) == 0
    finally:
        # SIGTERM, not the fixture's SIGKILL: the supervisor then stops its workers too.
        if child.proc.poll() is None:
            child.signal(signal.SIGTERM)


async def exchange(child: Any, http: str, ws: str) -> None:
    """Both workers up; Alice sends to Bob's devices; Bob logs out everywhere."""
    workers = {child.wait_for_event("relay.listening")["worker"] for _ in range(2)}
    assert workers == {0, 1}
    for name in ("alice", "bob"):
        created = httpx.post(f"{http}/api/accounts", json={"username": name, "password": PASSWORD})
        assert created.status_code == 201, created.text
    alice = grant(http, "alice")
    bobs = [grant(http, "bob") for _ in range(DEVICES)]
    async with trio.open_nursery() as nursery:
        sockets: list[WsClient] = []

        async def hold(token: str, task_status: trio.TaskStatus[WsClient]) -> None:
            headers = [("Authorization", f"Bearer {token}")]
            async with open_websocket_url(ws, extra_headers=headers) as conn:
                client = WsClient(conn)
                await client.expect("ready")
                task_status.started(client)
                await trio.sleep_forever()

        sender = await nursery.start(hold, alice["access_token"])
        for bob in bobs:
            sockets.append(await nursery.start(hold, bob["access_token"]))
        await sender.send(type="send", id="c1", to="bob", body="to every device")
        await sender.expect("accepted")
        for device in sockets:
            assert (await device.expect("message", timeout=5))["body"] == "to every device"
        bearer = {"Authorization": f"Bearer {bobs[0]['access_token']}"}
        assert httpx.post(f"{http}/api/logout/all", headers=bearer).status_code == 204
        for device in sockets:
            assert await device.closed_with(timeout=2) == 4003
        nursery.cancel_scope.cancel()
