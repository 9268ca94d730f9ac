"""``relay serve`` as a subprocess: SIGTERM drains with 1001; kill -9 loses nothing."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.conftest import PASSWORD
from tests.e2e.conftest import secret_env


def account(http: str, name: str) -> dict[str, Any]:
    httpx.post(f"{http}/api/accounts", json={"username": name, "password": PASSWORD})
    response = httpx.post(f"{http}/api/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    return grant


def started(spawn: Any, env: dict[str, str]) -> tuple[Any, str, str]:
    child = spawn(["serve"], env)
    ports = child.wait_for_event("relay.listening")
    return child, f"http://127.0.0.1:{ports['http_port']}", f"ws://127.0.0.1:{ports['ws_port']}/ws"


async def read_until_closed(ws: WebSocketConnection) -> None:
    """Drain the socket until the dead server's close is seen.

    Leaving unread frames behind would leave trio-websocket's reader blocked
    on its full message queue: if the close handshake then fails (the peer
    reset the connection), nothing ever unblocks it and ``__aexit__`` hangs.
    """
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass


def auth(grant: dict[str, Any]) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {grant['access_token']}")]


async def test_sigterm_closes_sockets_with_1001_and_exits_0(
    relay_env: dict[str, str], spawn: Any
) -> None:
    """On SIGTERM every open socket is closed with 1001 and the process exits 0."""
    child, http, ws_url = started(spawn, secret_env(relay_env))
    alice = account(http, "alice")
    async with open_websocket_url(ws_url, extra_headers=auth(alice)) as ws:
        assert json.loads(await ws.get_message())["type"] == "ready"
        child.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None and exc.reason.code == 1001
    assert child.proc.wait(timeout=20) == 0
    child.wait_for_event("relay.stopped")


async def test_kill_9_loses_nothing_that_was_accepted(
    relay_env: dict[str, str], spawn: Any
) -> None:
    """Every message answered with accepted is replayed after the process is SIGKILLed."""
    env = secret_env(relay_env)
    child, http, ws_url = started(spawn, env)
    alice, bob = account(http, "alice"), account(http, "bob")
    accepted: list[str] = []
    async with open_websocket_url(ws_url, extra_headers=auth(alice)) as ws:
        await ws.get_message()  # ready
        for i in range(200):
            frame = {"type": "send", "id": f"c{i}", "to": "bob", "body": i}
            await ws.send_message(json.dumps(frame))
        with trio.move_on_after(10):
            while len(accepted) < 120:  # kill mid-stream, with sends still in flight
                frame = json.loads(await ws.get_message())
                if frame["type"] == "accepted":
                    accepted.append(frame["message_id"])
        child.proc.kill()
        child.proc.wait(timeout=10)
        await read_until_closed(ws)
    assert len(accepted) >= 120
    child, http, ws_url = started(spawn, env)
    bob = httpx.post(
        f"{http}/api/login",
        json={"username": "bob", "password": PASSWORD, "device_id": bob["device_id"]},
    ).json()
    replayed: list[str] = []
    async with open_websocket_url(ws_url, extra_headers=auth(bob)) as ws:
        await ws.get_message()  # ready
        while True:  # until the replay falls silent
            with trio.move_on_after(2) as silent:
                replayed.append(json.loads(await ws.get_message())["id"])
            if silent.cancelled_caught:
                break
    assert set(accepted) <= set(replayed)
    assert replayed[: len(accepted)] == accepted  # and in the order accepted
