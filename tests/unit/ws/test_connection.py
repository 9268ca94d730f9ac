"""Connection's I/O over a fake socket: how each way of ending is reported."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionClosed

from relay.config import Config
from relay.crypto import AccessClaims
from relay.limits import MemoryLimits, policies
from relay.obs import LogSampler, Metrics, get_logger
from relay.store import QueuedMessage, StoreUnavailable
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


def connection(ws: FakeSocket, metrics: Metrics, store: Any = None) -> Connection:
    config = Config()
    ctx = ConnectionContext(
        config=config.ws,
        store=store or EmptyStore(),
        auth=None,  # type: ignore[arg-type]
        pipeline=BrokenPipeline(),  # type: ignore[arg-type]
        heartbeats=Heartbeats(),
        limits=MemoryLimits(policies(config)),
        metrics=metrics,
        log=get_logger("test"),
        clock=trio.current_time,
        wall_clock=lambda: NOW,
        counters=FrameCounters(metrics),
        sampler=LogSampler(trio.current_time),
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


class StoreDownAtFirst:
    """A store whose first *failures* reads are refused (unavailable), then hold one message."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reads: list[float] = []

    async def pending(self, device_id: str, after_seq: int, limit: int) -> list[Any]:
        self.reads.append(trio.current_time())
        if len(self.reads) <= self.failures:
            raise StoreUnavailable("connection refused")
        message = QueuedMessage("m1", 1, "d1", "u0", "d0", "alice", "c1", "hello", NOW)
        return [message] if after_seq < 1 else []


async def test_a_replay_the_store_refuses_is_retried_and_the_socket_stays_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The store down when a device connects: no 1011; the replay is tried again after 1 s,
    then 2 s, and the stored message arrives once the store answers."""
    metrics, ws, store = Metrics(), FakeSocket([]), StoreDownAtFirst(failures=2)
    conn = connection(ws, metrics, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        with trio.fail_after(10):
            while not any('"type":"message"' in frame for frame in ws.sent):
                await trio.sleep(0.5)
        assert ws.closed_with is None
        await ws.aclose(1000, "client bye")
    assert [round(b - a, 1) for a, b in pairwise(store.reads)] == [1.0, 2.0]
    assert closed(metrics, "1011") == 0


class QueueOf:
    """A store holding these unacked messages (by seq) for the device."""

    def __init__(self, *seqs: int) -> None:
        self.seqs = list(seqs)

    async def pending(self, device_id: str, after_seq: int, limit: int) -> list[Any]:
        return [
            QueuedMessage(f"m{seq}", seq, "d1", "u0", "d0", "alice", f"c{seq}", "x", NOW)
            for seq in self.seqs
            if seq > after_seq
        ][:limit]


def ids_sent(ws: FakeSocket) -> list[str]:
    return [frame.split('"id":"')[1].split('"')[0] for frame in ws.sent if '"message"' in frame]


async def test_a_catch_up_fills_the_gap_a_lost_push_left_behind_a_live_one() -> None:
    """Pushes of seq 3 and 4 were lost (a bus outage), 5 came live: the catch-up reads from
    the last replay, so 3 and 4 are sent, then 5 again (unacked: at-least-once)."""
    metrics, ws, store = Metrics(), FakeSocket([]), QueueOf(1, 2)
    conn = connection(ws, metrics, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await trio.testing.wait_all_tasks_blocked()
        assert ids_sent(ws) == ["m1", "m2"]  # the replay on connect
        store.seqs += [3, 4, 5]
        conn.push_message(5, '{"type":"message","id":"m5"}', 0.0)
        await trio.testing.wait_all_tasks_blocked()
        conn.catch_up()
        await trio.testing.wait_all_tasks_blocked()
        await ws.aclose(1000, "client bye")
    assert ids_sent(ws) == ["m1", "m2", "m5", "m3", "m4", "m5"]
