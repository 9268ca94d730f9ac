"""A small test client over trio-websocket: connect, send frames, read frames."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.conftest import Relay


class WsClient:
    """One test device's socket, with JSON helpers."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
        return frame

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def closed_with(self, timeout: float = 10) -> int | None:
        """Read until the server closes; return the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code if exc.reason else None


def ws_url(relay: Relay, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{relay.bound.ws_port}{path}"


@asynccontextmanager
async def connect(
    relay: Relay,
    token: str | None = None,
    *,
    via: str = "bearer",
    origin: str | None = None,
    path: str = "/ws",
    queue_size: int = 64,
) -> AsyncIterator[WsClient]:
    """Open a socket; the token goes in the Authorization header or the query."""
    headers: list[tuple[str, str]] = []
    if token is not None and via == "bearer":
        headers.append(("Authorization", f"Bearer {token}"))
    if token is not None and via == "query":
        path = f"{path}?access_token={token}"
    if origin is not None:
        headers.append(("Origin", origin))
    async with open_websocket_url(
        ws_url(relay, path), extra_headers=headers, message_queue_size=queue_size
    ) as ws:
        yield WsClient(ws)
