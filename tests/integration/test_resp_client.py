"""The hot path's Redis client (relay.resp) against the real Redis, and through outages.

Each test writes under its own key prefix (``redis_prefix``); an outage is a
:class:`~tests.redisproxy.RedisProxy` the test stops. Skipped, saying why,
when no Redis is reachable.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
import trio.testing

from relay.resp import RedisAddress, ReplyError, RespClient, open_subscription
from relay.resp import _connection as connection
from tests.redisproxy import RedisProxy


def client_of(url: str, timeout: float = 5.0) -> RespClient:
    return RespClient(RedisAddress.parse(url), timeout=timeout)


async def test_a_pipeline_gets_each_command_s_reply_in_order(
    redis_url: str, redis_prefix: str
) -> None:
    client = client_of(redis_url)
    key = f"{redis_prefix}n"
    replies = await client.execute([["SET", key, 1], ["INCR", key], ["GET", key], ["PING"]])
    assert replies == [b"OK", 2, b"2", b"PONG"]
    await client.aclose()


async def test_an_error_reply_fails_its_command_only(redis_url: str, redis_prefix: str) -> None:
    client = client_of(redis_url)
    key = f"{redis_prefix}s"
    replies = await client.execute([["SET", key, "text"], ["INCR", key], ["GET", key]])
    assert replies[0] == b"OK" and replies[2] == b"text"
    assert isinstance(replies[1], ReplyError)
    await client.aclose()


async def test_after_redis_came_back_the_next_call_opens_a_fresh_connection(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """A restart leaves a dead connection behind; the call retries on a new one."""
    proxy = RedisProxy()
    await proxy.start(nursery)
    client = client_of(proxy.url)
    assert await client.execute([["ECHO", "one"]]) == [b"one"]
    proxy.stop()
    await proxy.resume()
    assert await client.execute([["ECHO", "two"]]) == [b"two"]
    await client.aclose()
    proxy.stop()


async def test_an_unreachable_redis_raises_connection_error(nursery: trio.Nursery) -> None:
    proxy = RedisProxy()
    await proxy.start(nursery)
    url = proxy.url
    proxy.stop()
    with pytest.raises(ConnectionError):
        await client_of(url).execute([["PING"]])


async def test_a_cancelled_call_never_hands_its_reply_to_the_next(
    redis_url: str, redis_prefix: str
) -> None:
    """Cancelled while waiting, the connection is closed: replies never shift by one."""
    client = client_of(redis_url)
    with trio.move_on_after(0.1):
        await client.execute([["BLPOP", f"{redis_prefix}empty", "0.5"]])
    assert await client.execute([["ECHO", "mine"]]) == [b"mine"]
    await client.aclose()


async def test_a_reply_slower_than_the_timeout_raises_timeout_error(
    redis_url: str, redis_prefix: str
) -> None:
    client = client_of(redis_url, timeout=0.2)
    with pytest.raises(TimeoutError):
        await client.execute([["BLPOP", f"{redis_prefix}empty", "1"]])
    assert await client.execute([["ECHO", "after"]]) == [b"after"]
    await client.aclose()


async def test_a_client_refuses_a_second_task_at_once(redis_url: str, redis_prefix: str) -> None:
    client = client_of(redis_url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.execute, [["BLPOP", f"{redis_prefix}empty", "0.2"]])
        await trio.sleep(0.05)
        with pytest.raises(RuntimeError):
            await client.execute([["PING"]])
    await client.aclose()


async def test_a_subscription_gets_what_is_published_to_its_channels(
    redis_url: str, redis_prefix: str
) -> None:
    channels = [f"{redis_prefix}a", f"{redis_prefix}b"]
    publisher = client_of(redis_url)
    got: list[tuple[bytes, bytes]] = []
    with trio.fail_after(5):
        async with open_subscription(
            RedisAddress.parse(redis_url), channels, timeout=5
        ) as subscription:
            await publisher.execute(
                [["PUBLISH", channels[0], b"1"], ["PUBLISH", channels[1], b"2"]]
            )
            async for batch in subscription.batches():
                got += batch
                if len(got) == 2:
                    break
    assert got == [(channels[0].encode(), b"1"), (channels[1].encode(), b"2")]
    await publisher.aclose()


async def test_a_subscription_whose_connection_is_lost_raises_connection_error(
    nursery: trio.Nursery,
) -> None:
    proxy = RedisProxy()
    await proxy.start(nursery)
    with trio.fail_after(5), pytest.raises(ConnectionError):
        async with open_subscription(
            RedisAddress.parse(proxy.url), ["lost"], timeout=5
        ) as subscription:
            proxy.stop()
            async for _ in subscription.batches():
                pass


async def test_a_message_arriving_with_the_confirmation_is_not_dropped(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    """A publish right after SUBSCRIBE can share the confirmation's read."""
    client_end, server_end = trio.testing.memory_stream_pair()

    async def fake_open(address: RedisAddress) -> trio.abc.Stream:
        return client_end

    async def server() -> None:
        await server_end.receive_some()  # the SUBSCRIBE
        await server_end.send_all(
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nearly\r\n"
        )

    monkeypatch.setattr(connection, "_open_stream", fake_open)
    nursery.start_soon(server)
    with trio.fail_after(5):
        async with open_subscription(RedisAddress(), ["ch"], timeout=5) as subscription:
            async for batch in subscription.batches():
                assert batch == [(b"ch", b"early")]
                break


async def test_a_user_and_password_in_the_url_log_in(redis_url: str) -> None:
    import secrets

    name, password = f"relaytest-{secrets.token_hex(4)}", secrets.token_hex(8)
    admin = client_of(redis_url)
    await admin.execute([["ACL", "SETUSER", name, "on", f">{password}", "+ping"]])
    try:
        host = redis_url.split("//", 1)[1]
        good = client_of(f"redis://{name}:{password}@{host}")
        assert await good.execute([["PING"]]) == [b"PONG"]
        await good.aclose()
        with pytest.raises(ConnectionError) as refused:
            await client_of(f"redis://{name}:wrong-{password}@{host}").execute([["PING"]])
        assert password not in str(refused.value)
    finally:
        await admin.execute([["ACL", "DELUSER", name]])
        await admin.aclose()


async def test_a_unix_socket_url_connects(tmp_path: Path, redis_url: str) -> None:
    """``unix:///path``: here a socket that forwards to the test Redis."""
    import socket

    path = str(tmp_path / "redis.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(4)
    listener = trio.SocketListener(sock)

    async def forward(client: trio.SocketStream) -> None:
        host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
        async with client, await trio.open_tcp_stream(host, int(port)) as upstream:

            async def pipe(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while data := await a.receive_some():
                        await b.send_all(data)

            async with trio.open_nursery() as both:
                both.start_soon(pipe, client, upstream)
                both.start_soon(pipe, upstream, client)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, forward, [listener])
        client = client_of(f"unix://{path}?db=0")
        assert await client.execute([["ECHO", "through a unix socket"]]) == [
            b"through a unix socket"
        ]
        await client.aclose()
        nursery.cancel_scope.cancel()


class FakeRedis:
    """Connections that a test plays the server's side of (memory streams, no sockets)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = 0
        self.server_ends: list[trio.testing.MemoryStapledStream] = []  # type: ignore[type-arg]
        self._new = trio.Event()
        monkeypatch.setattr(connection, "_open_stream", self._open)

    async def _open(self, address: RedisAddress) -> trio.abc.Stream:
        client_end, server_end = trio.testing.memory_stream_pair()
        self.opened += 1
        self.server_ends.append(server_end)
        self._new.set()
        self._new = trio.Event()
        return client_end

    async def connection(self, index: int) -> trio.testing.MemoryStapledStream:  # type: ignore[type-arg]
        while len(self.server_ends) <= index:
            await self._new.wait()
        return self.server_ends[index]


async def test_a_call_that_timed_out_is_never_sent_again(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """The commands may have run: a limit's script sent twice would spend its tokens twice."""
    fake = FakeRedis(monkeypatch)
    with pytest.raises(TimeoutError):
        await RespClient(RedisAddress(), timeout=1).execute([["EVALSHA", "abc", 1, "k"]])
    assert fake.opened == 1


async def test_a_server_that_cannot_serve_is_not_asked_twice_and_is_left(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    """LOADING (or READONLY, a demoted primary): raised as unreachable, never resent
    (Redis may have run part of the pipeline); the next call opens a new connection."""
    fake = FakeRedis(monkeypatch)

    async def serve_first() -> None:
        server = await fake.connection(0)
        await server.receive_some()
        await server.send_all(b"-LOADING Redis is loading the dataset in memory\r\n")

    nursery.start_soon(serve_first)
    client = RespClient(RedisAddress(), timeout=5)
    with pytest.raises(ConnectionError):
        await client.execute([["PUBLISH", "ch", "x"]])
    assert fake.opened == 1

    async def serve_second() -> None:
        server = await fake.connection(1)
        await server.receive_some()
        await server.send_all(b":0\r\n")

    nursery.start_soon(serve_second)
    assert await client.execute([["PUBLISH", "ch", "x"]]) == [0]
    assert fake.opened == 2


async def subscribed(fake: FakeRedis) -> trio.testing.MemoryStapledStream:  # type: ignore[type-arg]
    server = await fake.connection(0)
    await server.receive_some()  # SUBSCRIBE
    await server.send_all(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
    return server


async def test_a_silent_subscription_pings_and_goes_on_when_redis_answers(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeRedis(monkeypatch)

    async def server_side() -> None:
        server = await subscribed(fake)
        assert b"PING" in await server.receive_some()  # after IDLE seconds of silence
        await server.send_all(
            b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nlater\r\n"
        )

    nursery.start_soon(server_side)
    async with open_subscription(RedisAddress(), ["ch"], timeout=1) as subscription:
        async for batch in subscription.batches():
            assert batch == [(b"ch", b"later")]
            assert trio.current_time() >= connection.IDLE
            break


async def test_a_subscription_whose_ping_goes_unanswered_raises_timeout_error(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A connection dropped without a word (a NAT) is noticed, so the bus re-subscribes."""
    fake = FakeRedis(monkeypatch)
    nursery.start_soon(subscribed, fake)
    with pytest.raises(TimeoutError):
        async with open_subscription(RedisAddress(), ["ch"], timeout=1) as subscription:
            async for _ in subscription.batches():
                pass
