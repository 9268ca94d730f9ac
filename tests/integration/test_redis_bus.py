"""RedisBus: several "processes" (buses with a sink each) on one real Redis.

Each test has a key prefix of its own (``redis_prefix``); an outage is a
:class:`~tests.redisproxy.RedisProxy` that the test stops and starts.
Skipped, saying why, when no Redis is reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
import trio
import trio.testing

from relay.bus import (
    Event,
    MessageQueued,
    PrekeysLow,
    RedisBus,
    Resync,
    SessionRevoked,
    open_redis_bus,
)
from relay.bus._routing import BusKeys
from relay.limits import redis_client
from relay.obs import get_logger
from tests.redisproxy import RedisProxy

TTL = 0.6  # presence TTL: refreshed every 0.2 s


class Process:
    """A bus and the events its sink received (a relay process, as the bus sees it)."""

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus
        self.events: list[Event] = []
        self._changed = trio.Event()
        bus.attach(self)

    def handle(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def received(self, want: Callable[[Event], bool], timeout: float = 5) -> Event:
        """The first event received so far, or from now on, that *want* accepts."""
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if want(event):
                        return event
                await self._changed.wait()

    def of(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def message(*devices: str, seq: int = 1) -> MessageQueued:
    return MessageQueued(
        device_ids=devices,
        seq=seq,
        message_id=f"m{seq}",
        sender="alice",
        sender_device="a1",
        body=msgspec.Raw(b'"hi"'),
        sent_at=1.0,
        received_at=42.0,
    )


OpenProcess = Callable[..., Awaitable[Process]]


@pytest.fixture
async def processes(redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> OpenProcess:
    """Opens a Process on the test's prefix (``await processes(url=..., ttl=...)``).

    Each bus lives in a task of the test's nursery (a nursery must be left by
    the task that entered it), and closes with it at the end of the test.
    """

    async def hold(url: str, ttl: float, task_status: trio.TaskStatus[RedisBus]) -> None:
        async with open_redis_bus(
            url, prefix=redis_prefix, presence_ttl=ttl, log=get_logger("test")
        ) as bus:
            task_status.started(bus)
            await trio.sleep_forever()

    async def open_process(url: str = redis_url, ttl: float = TTL) -> Process:
        bus: RedisBus = await nursery.start(hold, url, ttl)
        return Process(bus)

    return open_process


async def presence_of(url: str, prefix: str, device_id: str) -> str | None:
    async with redis_client(url) as client:
        return await client.get(BusKeys(prefix).presence(device_id))


async def until(condition: Callable[[], object], timeout: float = 5) -> None:
    """Poll *condition* (sync or async) until true; fail after *timeout* seconds."""
    with trio.fail_after(timeout):
        while True:
            result = condition()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


# --- routing -------------------------------------------------------------------


async def test_a_message_reaches_only_the_process_holding_the_device(
    processes: OpenProcess,
) -> None:
    """Published on A for devices on A and B: B gets its device only, C nothing."""
    a, b, c = await processes(), await processes(), await processes()
    await a.bus.announce("dA")
    await b.bus.announce("dB")
    await a.bus.publish(message("dA", "dB", "offline"))
    got = await b.received(lambda e: isinstance(e, MessageQueued))
    assert isinstance(got, MessageQueued)
    assert got.device_ids == ("dB",) and got.received_at == 0.0
    assert a.of(MessageQueued) == [message("dA", "dB", "offline")]  # delivered here directly
    await trio.sleep(0.1)
    assert c.of(MessageQueued) == [] and len(b.of(MessageQueued)) == 1


async def test_messages_queued_together_for_a_process_travel_as_one_publish(
    processes: OpenProcess, redis_url: str, redis_prefix: str
) -> None:
    """Twenty messages for B published at once: B gets all, in order, in a few publishes.

    One publish per event made B push, and its sockets write, one frame at a
    time; a batch for B now crosses (and is pushed) whole.
    """
    a, b = await processes(), await processes()
    await b.bus.announce("dB")
    publishes = 0
    async with redis_client(redis_url) as raw, raw.pubsub(
        channels=[BusKeys(redis_prefix).process(b.bus.process_id)]
    ) as watcher:

        async def count() -> None:
            nonlocal publishes
            async for message in watcher:
                if message["type"] == "message":
                    publishes += 1

        async with trio.open_nursery() as counting:
            counting.start_soon(count)
            await trio.sleep(0.1)  # the watcher is subscribed
            for seq in range(1, 21):
                await a.bus.publish(message("dB", seq=seq))
            await until(lambda: len(b.of(MessageQueued)) == 20)
            await trio.sleep(0.1)
            counting.cancel_scope.cancel()
    assert [e.seq for e in b.of(MessageQueued) if isinstance(e, MessageQueued)] == list(
        range(1, 21)
    )
    assert publishes <= 5


async def test_publishing_with_room_in_the_queue_never_yields(processes: OpenProcess) -> None:
    """The pipeline publishes a committed batch's messages before any writer runs.

    A checkpoint per crossing message let each connection's writer wake and
    write one frame at a time (a system call per frame) while the batch was
    still being published; local deliveries never yielded.
    """
    a = await processes()
    with trio.testing.assert_no_checkpoints():
        for seq in range(1, 21):
            await a.bus.publish(message("d-elsewhere", seq=seq))


async def test_a_revocation_reaches_every_process_once(processes: OpenProcess) -> None:
    """SessionRevoked goes to all processes, the publisher's own sink included, once each."""
    a, b, c = await processes(), await processes(), await processes()
    revoked = SessionRevoked("s1", "logout")
    await b.bus.publish(revoked)
    for process in (a, b, c):
        assert await process.received(lambda e: e == revoked) == revoked
    await trio.sleep(0.1)
    assert [len(p.of(SessionRevoked)) for p in (a, b, c)] == [1, 1, 1]


async def test_a_prekey_notice_goes_to_the_device_holder(processes: OpenProcess) -> None:
    """PrekeysLow for a device on B reaches B and not C."""
    a, b, c = await processes(), await processes(), await processes()
    await b.bus.announce("dB")
    await a.bus.publish(PrekeysLow("dB", 2))
    assert await b.received(lambda e: isinstance(e, PrekeysLow)) == PrekeysLow("dB", 2)
    await trio.sleep(0.1)
    assert c.of(PrekeysLow) == []


async def test_announce_writes_the_route_before_returning(
    processes: OpenProcess, redis_url: str, redis_prefix: str
) -> None:
    """Once announce returns, the presence map names this process."""
    b = await processes()
    await b.bus.announce("dB")
    assert await presence_of(redis_url, redis_prefix, "dB") == b.bus.process_id


async def test_withdrawing_the_last_connection_removes_the_route(
    processes: OpenProcess, redis_url: str, redis_prefix: str
) -> None:
    """Two connections of a device: the route stays after one withdraw, goes after the second."""
    a, b = await processes(), await processes()
    await b.bus.announce("dB")
    await b.bus.announce("dB")
    b.bus.withdraw("dB")
    await trio.sleep(0.1)
    assert await presence_of(redis_url, redis_prefix, "dB") == b.bus.process_id
    b.bus.withdraw("dB")
    await until(lambda: _is_none(redis_url, redis_prefix, "dB"))
    await a.bus.publish(message("dB"))
    await trio.sleep(0.1)
    assert b.of(MessageQueued) == []


async def _is_none(url: str, prefix: str, device_id: str) -> bool:
    return await presence_of(url, prefix, device_id) is None


async def test_a_withdraw_never_removes_another_process_s_route(
    processes: OpenProcess, redis_url: str, redis_prefix: str
) -> None:
    """The device moved to B: A's late withdraw leaves B's route alone."""
    a, b = await processes(), await processes()
    await a.bus.announce("d1")
    await b.bus.announce("d1")
    a.bus.withdraw("d1")
    await trio.sleep(0.2)
    assert await presence_of(redis_url, redis_prefix, "d1") == b.bus.process_id


async def test_a_live_route_is_refreshed_and_a_dead_one_expires(
    redis_url: str, redis_prefix: str, processes: OpenProcess
) -> None:
    """While held, a route outlives its TTL; a process gone without withdrawing loses it."""
    b = await processes()
    await b.bus.announce("alive")
    async with open_redis_bus(
        redis_url, prefix=redis_prefix, presence_ttl=TTL, log=get_logger("test")
    ) as dying:
        await dying.announce("orphan")
    # The "dying" process is gone (its tasks cancelled, nothing withdrawn).
    await trio.sleep(2 * TTL)
    assert await presence_of(redis_url, redis_prefix, "alive") == b.bus.process_id
    assert await presence_of(redis_url, redis_prefix, "orphan") is None


# --- losing Redis ----------------------------------------------------------------


@pytest.fixture
async def proxy(redis_url: str, nursery: trio.Nursery) -> AsyncIterator[RedisProxy]:
    """A proxy in front of the test Redis, for a process whose Redis can go away."""
    running = RedisProxy()
    await running.start(nursery)
    yield running
    running.stop()


async def test_after_a_lost_subscription_the_process_resyncs_and_routes_again(
    processes: OpenProcess, proxy: RedisProxy, redis_url: str, redis_prefix: str
) -> None:
    """Redis "restarts" under B: B re-subscribes, rewrites its routes, and delivers Resync."""
    a, b = await processes(), await processes(url=proxy.url)
    await b.bus.announce("dB")
    proxy.stop()
    await until(lambda: not b.bus.connected)
    async with redis_client(redis_url) as client:  # the restart lost B's route
        await client.delete([BusKeys(redis_prefix).presence("dB")])
    await a.bus.publish(message("dB", seq=1))  # reaches nobody: B is away
    with pytest.raises(ConnectionError):
        await b.bus.ping()
    resyncs = len(b.of(Resync))
    await proxy.resume()
    await until(lambda: b.bus.connected)
    await b.received(lambda e: isinstance(e, Resync) and len(b.of(Resync)) > resyncs)
    assert await presence_of(redis_url, redis_prefix, "dB") == b.bus.process_id
    await b.bus.ping()
    await a.bus.publish(message("dB", seq=2))
    got = await b.received(lambda e: isinstance(e, MessageQueued))
    assert isinstance(got, MessageQueued) and got.seq == 2


async def test_a_revocation_published_while_a_process_was_away_reaches_it(
    processes: OpenProcess, proxy: RedisProxy
) -> None:
    """B missed the broadcast while disconnected: it reads it back when it re-subscribes."""
    a, b = await processes(), await processes(url=proxy.url)
    proxy.stop()
    await until(lambda: not b.bus.connected)
    revoked = SessionRevoked("s-away", "logout")
    await a.bus.publish(revoked)
    await a.received(lambda e: e == revoked)
    await proxy.resume()
    assert await b.received(lambda e: e == revoked) == revoked


async def test_a_process_that_cannot_publish_keeps_serving_and_heals(
    processes: OpenProcess, proxy: RedisProxy
) -> None:
    """A's Redis is away: local delivery goes on, nothing raises; once back, its revocation
    reaches B and B reads the store (Resync) for the pushes A could not send."""
    a, b = await processes(url=proxy.url), await processes()
    await a.bus.announce("dA")
    await b.bus.announce("dB")
    proxy.stop()
    await until(lambda: not a.bus.connected)
    resyncs = len(b.of(Resync))
    await a.bus.publish(message("dA", "dB"))
    await a.bus.publish(SessionRevoked("s1", "logout"))
    await a.bus.announce("dA2")
    assert a.of(MessageQueued) == [message("dA", "dB")]
    assert b.of(MessageQueued) == []
    await proxy.resume()
    assert await b.received(lambda e: e == SessionRevoked("s1", "logout"))
    await b.received(lambda e: isinstance(e, Resync) and len(b.of(Resync)) > resyncs)
    await a.bus.publish(message("dB", seq=3))
    got = await b.received(lambda e: isinstance(e, MessageQueued))
    assert isinstance(got, MessageQueued) and got.seq == 3
