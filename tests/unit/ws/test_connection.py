"""Connection's I/O over a fake socket: how each way of ending is reported."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionClosed

from relay.config import Config
from relay.crypto import AccessClaims
from relay.limits import MemoryLimits, policies
from relay.obs import Metrics, get_logger
from relay.ws import Connection
from relay.ws._connection import ConnectionContext, FrameCounters
from relay.ws._heartbeats import Heartbeats

NOW = 1_800_000_000.0
SEND = '{"type":"send","id":"c1","to":"bob","body":1}'


class FakeSocket:
    """A WebSocket with no trio-websocket internals: send_message per frame."""

    def __init__(self, incoming: list[str], *, writes_fail: bool = False) -> None:
        self.incoming = incoming
        self.writes_fail = writes_fail
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self._closed = trio.Event()

    async def get_message(self) -> str:
        if self.incoming:
            return self.incoming.pop(0)
        await self._closed.wait()
        raise ConnectionClosed(None)

    async def send_message(self, message: str) -> None:
        if self.writes_fail:
            raise ConnectionClosed(None)
        self.sent.append(message)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason or "")
        self._closed.set()


class EmptyStore:
    async def pending(self, device_id: str, after_seq: int, limit: int) -> list[Any]:
        return []


class BrokenPipeline:
    async def submit_send(self, request: Any) -> None:
        raise RuntimeError("injected bug")


def connection(ws: FakeSocket, metrics: Metrics) -> Connection:
    config = Config()
    ctx = ConnectionContext(
        config=config.ws,
        store=EmptyStore(),  # type: ignore[arg-type]
        auth=None,  # type: ignore[arg-type]
        pipeline=BrokenPipeline(),  # type: ignore[arg-type]
        heartbeats=Heartbeats(),
        limits=MemoryLimits(policies(config)),
        metrics=metrics,
        log=get_logger("test"),
        clock=trio.current_time,
        wall_clock=lambda: NOW,
        counters=FrameCounters(metrics),
    )
    claims = AccessClaims("u1", "d1", "s1", "j1", NOW, NOW + 900)
    return Connection(ws, claims, "alice", ctx)  # type: ignore[arg-type]


def closed(metrics: Metrics, code: str) -> float:
    return metrics.registry.get_sample_value("relay_ws_closes_total", {"code": code}) or 0.0


async def test_a_socket_dying_under_the_writer_is_1006_not_an_error() -> None:
    """A write that finds the peer gone ends the connection quietly as 1006."""
    metrics, ws = Metrics(), FakeSocket([], writes_fail=True)
    with trio.fail_after(5):
        await connection(ws, metrics).run()
    assert ws.closed_with == (1006, "connection lost")
    assert closed(metrics, "1006") == 1 and closed(metrics, "1011") == 0


async def test_a_bug_in_handling_a_frame_closes_1011() -> None:
    """An unexpected exception while serving closes this connection with 1011 and is logged."""
    metrics, ws = Metrics(), FakeSocket([SEND])
    with trio.fail_after(5):
        await connection(ws, metrics).run()
    assert ws.closed_with == (1011, "internal error")


async def test_the_peer_leaving_is_a_normal_close() -> None:
    """When the peer closes, the connection ends with 1000 after its ready frame."""
    metrics, ws = Metrics(), FakeSocket([])
    conn = connection(ws, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await trio.testing.wait_all_tasks_blocked()
        assert '"type":"ready"' in ws.sent[0]
        await ws.aclose(1000, "client bye")
    assert closed(metrics, "1000") == 1


async def test_a_full_outbox_closes_1013() -> None:
    """Pushing past the outbox's capacity closes with 1013 (too slow to read)."""
    metrics, ws = Metrics(), FakeSocket([])
    conn = connection(ws, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await trio.testing.wait_all_tasks_blocked()
        for seq in range(1, 300):  # the writer has no chance to run in between
            conn.push_message(seq, f"m{seq}", 0.0)
    assert ws.closed_with == (1013, "too slow to read its messages")
