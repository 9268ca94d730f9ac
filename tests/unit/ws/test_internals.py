"""trio-websocket internals: batched writes (and their fallback), freeing a blocked reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection

from relay.ws._internals import can_batch, release_reader, send_frames


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


@asynccontextmanager
async def websocket_pair(queue_size: int = 4) -> AsyncIterator[tuple[Any, Any, trio.Nursery]]:
    """A real trio-websocket server and client over an in-memory stream pair."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        server = WebSocketConnection(
            server_stream, WSConnection(ConnectionType.SERVER), message_queue_size=queue_size
        )
        client = WebSocketConnection(
            client_stream,
            WSConnection(ConnectionType.CLIENT),
            host="x",
            path="/ws",
            message_queue_size=queue_size,
        )
        nursery.start_soon(server._reader_task, name="server-reader")
        nursery.start_soon(client._reader_task)
        request = await server._get_request()
        server_side = await request.accept()
        await client._open_handshake.wait()
        yield server_side, client, nursery
        nursery.cancel_scope.cancel()


async def test_the_installed_trio_websocket_has_the_internals() -> None:
    """The pinned trio-websocket offers what send_frames and release_reader use."""
    async with websocket_pair() as (server, _, _):
        assert can_batch(server)
        assert hasattr(server, "_recv_channel")


async def test_batched_frames_arrive_as_separate_messages_in_order() -> None:
    """send_frames writes many frames at once; the peer reads each as its own message."""
    async with websocket_pair(queue_size=16) as (server, client, _):
        await send_frames(server, ["one", "two", "three"])
        assert [await client.get_message() for _ in range(3)] == ["one", "two", "three"]


async def test_batched_send_on_a_closed_connection_raises_connection_closed() -> None:
    """After the peer is gone, a batched send raises ConnectionClosed like send_message."""
    async with websocket_pair() as (server, client, _):
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the server has seen the close
        with pytest.raises(ConnectionClosed):
            await send_frames(server, ["a", "b"])


async def test_release_reader_frees_a_reader_blocked_on_a_full_queue() -> None:
    """A reader stuck on its full message queue ends once release_reader is called."""
    async with websocket_pair(queue_size=1) as (server, client, nursery):
        for i in range(5):  # one fits the queue; the reader blocks on the next
            await client.send_message(str(i))
        await trio.testing.wait_all_tasks_blocked()
        await client._stream.aclose()  # the peer resets: sending the close frame fails
        await server.aclose()
        release_reader(server)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert "server-reader" not in {task.name for task in nursery.child_tasks}
