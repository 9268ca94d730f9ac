"""send_frames: one write for many frames, or one send_message each as a fallback."""

from __future__ import annotations

from typing import Any

from relay.ws._send import can_batch, send_frames


class PlainSocket:
    """A WebSocket-like object without trio-websocket's internals."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_message(self, message: str) -> None:
        self.sent.append(message)


async def test_without_internals_each_frame_is_sent_alone() -> None:
    """An object lacking trio-websocket 0.12's internals gets send_message per frame, in order."""
    ws: Any = PlainSocket()
    assert not can_batch(ws)
    await send_frames(ws, ["a", "b", "c"])
    assert ws.sent == ["a", "b", "c"]
