"""Whole relays on the Redis bus and limits, in this process: one relay, then two as one.

Two relays on one Redis prefix (and one store file) stand for two relay
processes: what a client does on one, the other sees. Skipped, saying why,
when no Redis is reachable.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from tests.conftest import RelayFactory, bearer, login, register, signed_up
from tests.redisproxy import RedisProxy
from tests.wsclient import connect


def on_redis(url: str, prefix: str, **changes: Any) -> dict[str, Any]:
    """Config changes that put a relay's bus and limits on Redis under *prefix*."""
    return {
        "bus__backend": "redis",
        "bus__url": url,
        "bus__prefix": prefix,
        "limits__backend": "redis",
        "limits__url": url,
        "limits__prefix": prefix,
        **changes,
    }


@pytest.fixture
def redis_config(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return on_redis(redis_url, redis_prefix)


async def test_a_relay_on_redis_serves_as_usual(
    hosted_relays: RelayFactory, redis_config: dict[str, Any]
) -> None:
    """Sign-up, login, a message pushed and acked, readiness, and a logout closing 4003."""
    relay, http = await hosted_relays(**redis_config)
    alice, bob = await signed_up(http, "alice"), await signed_up(http, "bob")
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["bus"] == "ok"
    async with connect(relay, alice["access_token"]) as a, connect(
        relay, bob["access_token"]
    ) as b:
        await a.expect("ready")
        await b.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="over redis")
        message_id = (await a.expect("accepted"))["message_id"]
        message = await b.expect("message")
        assert (message["id"], message["body"]) == (message_id, "over redis")
        await b.send(type="ack", id=message_id)
        await http.post("/api/logout", headers=bearer(bob))
        assert await b.closed_with(timeout=1) == 4003


async def test_two_relays_on_one_redis_deliver_to_each_other(
    hosted_relays: RelayFactory, redis_config: dict[str, Any]
) -> None:
    """Alice on relay A, Bob on relay B: each one's message reaches the other at once."""
    relay_a, http_a = await hosted_relays(**redis_config)
    relay_b, _ = await hosted_relays(**redis_config)
    alice, bob = await signed_up(http_a, "alice"), await signed_up(http_a, "bob")
    async with connect(relay_a, alice["access_token"]) as a, connect(
        relay_b, bob["access_token"]
    ) as b:
        await a.expect("ready")
        await b.expect("ready")
        await a.send(type="send", id="c1", to="bob", body="from A")
        await a.expect("accepted")
        assert (await b.expect("message", timeout=2))["body"] == "from A"
        await b.send(type="send", id="c2", to="alice", body="from B")
        await b.expect("accepted")
        assert (await a.expect("message", timeout=2))["body"] == "from B"


async def test_a_logout_on_one_relay_ends_the_session_on_the_other(
    hosted_relays: RelayFactory, redis_config: dict[str, Any]
) -> None:
    """Logging out through A closes Bob's socket on B with 4003, and B refuses his token."""
    _, http_a = await hosted_relays(**redis_config)
    relay_b, http_b = await hosted_relays(**redis_config)
    bob = await signed_up(http_a, "bob")
    async with connect(relay_b, bob["access_token"]) as b:
        await b.expect("ready")
        assert (await http_a.post("/api/logout", headers=bearer(bob))).status_code == 204
        assert await b.closed_with(timeout=1) == 4003
    assert (await http_b.get("/api/devices", headers=bearer(bob))).status_code == 401


async def test_both_relays_count_against_one_login_limit(
    hosted_relays: RelayFactory, redis_url: str, redis_prefix: str
) -> None:
    """With 3 logins a minute per IP, the fourth is refused whichever relay it reaches."""
    changes = on_redis(redis_url, redis_prefix, auth__login_rate_per_minute=3)
    _, http_a = await hosted_relays(**changes)
    _, http_b = await hosted_relays(**changes)
    await register(http_a, "alice")
    await login(http_a, "alice")
    await login(http_b, "alice")
    await login(http_a, "alice")
    refused = await http_b.post(
        "/api/login", json={"username": "alice", "password": "correct horse battery"}
    )
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"


async def test_both_relays_count_against_one_connection_cap_per_user(
    hosted_relays: RelayFactory, redis_url: str, redis_prefix: str
) -> None:
    """Cap 1: Alice connected on A is refused 503 on B; once she leaves A, B lets her in."""
    changes = on_redis(redis_url, redis_prefix, ws__max_connections_per_user=1)
    relay_a, http_a = await hosted_relays(**changes)
    relay_b, _ = await hosted_relays(**changes)
    alice = await signed_up(http_a, "alice")
    async with connect(relay_a, alice["access_token"]) as on_a:
        await on_a.expect("ready")
        with pytest.raises(ConnectionRejected) as refused:
            async with connect(relay_b, alice["access_token"]):
                pass
        assert refused.value.status_code == 503
    with trio.fail_after(5):  # A gives the place back just after the socket closes
        while True:
            try:
                async with connect(relay_b, alice["access_token"]) as on_b:
                    await on_b.expect("ready")
                    break
            except ConnectionRejected:
                await trio.sleep(0.02)


async def test_while_redis_is_down_connected_clients_keep_talking_and_logins_wait(
    hosted_relays: RelayFactory, redis_prefix: str, nursery: trio.Nursery
) -> None:
    """Redis away: sockets on the relay keep sending and receiving, a login is 503
    limits_unavailable with Retry-After, readiness says the bus is unreachable; Redis
    back, logins work again, no restart."""
    proxy = RedisProxy()
    await proxy.start(nursery)
    relay, http = await hosted_relays(**on_redis(proxy.url, redis_prefix))
    alice, bob = await signed_up(http, "alice"), await signed_up(http, "bob")
    async with connect(relay, alice["access_token"]) as a, connect(
        relay, bob["access_token"]
    ) as b:
        await a.expect("ready")
        await b.expect("ready")
        proxy.stop()
        await a.send(type="send", id="c1", to="bob", body="still here")
        await a.expect("accepted")
        assert (await b.expect("message"))["body"] == "still here"
        refused = await http.post(
            "/api/login", json={"username": "alice", "password": "correct horse battery"}
        )
        assert refused.status_code == 503
        assert refused.json()["error"] == "limits_unavailable"
        assert refused.headers["Retry-After"] == "5"
        assert (await http.get("/api/devices", headers=bearer(alice))).status_code == 200
        unready = (await http.get("/readyz")).json()
        assert (unready["bus"], unready["limits"]) == ("unreachable", "unreachable")
        await proxy.resume()
        with trio.fail_after(5):
            while True:
                response = await http.post(
                    "/api/login", json={"username": "alice", "password": "correct horse battery"}
                )
                if response.status_code == 200:
                    break
                await trio.sleep(0.2)


async def test_a_relay_whose_redis_is_down_at_start_starts_and_heals(
    hosted_relays: RelayFactory, redis_prefix: str, nursery: trio.Nursery
) -> None:
    """Started with Redis unreachable, the relay serves what it can and recovers alone:
    ready again (bus subscribed) and signing up again (limits reachable)."""
    proxy = RedisProxy()
    await proxy.start(nursery)
    proxy.stop()
    _, http = await hosted_relays(**on_redis(proxy.url, redis_prefix))
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 503
    await proxy.resume()
    with trio.fail_after(5):
        while (await http.get("/readyz")).status_code != 200:
            await trio.sleep(0.1)
        account = {"username": "alice", "password": "correct horse battery"}
        while (await http.post("/api/accounts", json=account)).status_code == 503:
            await trio.sleep(0.1)
    await login(http, "alice")
