"""Faults in what relay depends on: the store locked or full, a client frozen mid-stream.

Each fault must refuse what cannot be done with a clear error, lose nothing
that was accepted, and leave every other connection unharmed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from relay.store import StoreUnavailable
from tests.conftest import RelayFactory, alice_and_bob, login, register, signed_up
from tests.wsclient import WsClient, connect


@contextmanager
def write_locked(path: str) -> Iterator[None]:
    """Another process holds SQLite's write lock on *path* while the block runs."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def accepted_id(ws: WsClient, cid: str, body: Any) -> str:
    await ws.send(type="send", id=cid, to="bob", body=body)
    frame = await ws.expect("accepted")
    message_id: str = frame["message_id"]
    return message_id


async def test_a_locked_database_refuses_sends_and_loses_nothing(
    relay_with: RelayFactory,
) -> None:
    """While the database is locked a send gets store_unavailable; before and after, all arrive."""
    relay, http = await relay_with(store__busy_timeout=0.05)
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        first = await accepted_id(a, "c1", "before")
        with write_locked(relay.services.config.store.path):
            await a.send(type="send", id="c2", to="bob", body="during")
            error = await a.expect("error")
        assert (error["code"], error["ref"]) == ("store_unavailable", "c2")
        second = await accepted_id(a, "c2", "during")  # the same id, resent
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        got = [await b.expect("message") for _ in range(2)]
    assert [(m["id"], m["body"]) for m in got] == [(first, "before"), (second, "during")]


async def test_a_full_disk_refuses_sends_and_keeps_serving(
    relay_with: RelayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store reporting a full disk refuses the batch; the connection and the relay go on."""
    relay, http = await relay_with()
    alice, bob = await alice_and_bob(http)
    store = relay.services.store

    async def full(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("database or disk is full")

    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        first = await accepted_id(a, "c1", "kept")
        with monkeypatch.context() as patch:
            patch.setattr(store, "commit", full)
            await a.send(type="send", id="c2", to="bob", body="refused")
            assert (await a.expect("error"))["code"] == "store_unavailable"
        await accepted_id(a, "c3", "after")
    queued = [m.body for m in await store.pending(bob["device_id"], 0, 10)]
    assert queued == ['"kept"', '"after"'] and first


async def test_http_answers_503_while_the_database_is_locked(relay_with: RelayFactory) -> None:
    """A request whose write cannot get the lock is 503 store_unavailable, never a 500."""
    relay, http = await relay_with(store__busy_timeout=0.05)
    await register(http, "alice")
    with write_locked(relay.services.config.store.path):
        response = await http.post(
            "/api/accounts", json={"username": "bob", "password": "bob password"}
        )
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert (await login(http, "alice"))["access_token"]


FROZEN_CLIENT = textwrap.dedent(
    """
    import sys, trio
    from trio_websocket import open_websocket_url

    async def main(url, token):
        headers = [("Authorization", "Bearer " + token)]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.get_message()
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main, sys.argv[1], sys.argv[2])
    """
)


async def test_a_frozen_client_is_cut_off_and_others_are_unharmed(
    relay_with: RelayFactory,
) -> None:
    """A client process stopped with SIGSTOP is closed with 1013; another pair keeps talking."""
    relay, http = await relay_with(
        ws__outbound_queue=8,
        ws__heartbeat_interval=1.0,
        ws__heartbeat_timeout=1.0,
        ws__send_burst=10_000,
        ws__send_rate_per_second=10_000.0,
        ws__send_burst_per_user=10_000,
        ws__send_rate_per_user_per_second=10_000.0,
        queue__max_per_sender=100_000,
    )
    alice, bob = await alice_and_bob(http)
    carol = await signed_up(http, "carol")
    url = f"ws://127.0.0.1:{relay.bound.ws_port}/ws"
    child = subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLIENT, url, bob["access_token"]],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert await trio.to_thread.run_sync(child.stdout.readline) == "ready\n"
        os.kill(child.pid, signal.SIGSTOP)
        registry = relay.services.metrics.registry
        async with connect(relay, alice["access_token"]) as a, connect(
            relay, carol["access_token"]
        ) as c:
            await a.expect("ready")
            await c.expect("ready")
            with trio.fail_after(20):
                i = 0
                while not registry.get_sample_value("relay_ws_closes_total", {"code": "1013"}):
                    await a.send(type="send", id=f"b{i}", to="bob", body="x" * 4096)
                    await a.expect("accepted")
                    await a.send(type="send", id=f"c{i}", to="carol", body=i)
                    await a.expect("accepted")
                    assert (await c.expect("message"))["body"] == i
                    i += 1
        pending = await relay.services.store.pending(bob["device_id"], 0, 100_000)
        assert len(pending) == i  # every message to the frozen client stays queued
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


async def test_readyz_answers_while_another_process_holds_the_write_lock(
    relay_with: RelayFactory,
) -> None:
    """Readiness reads, and WAL lets reads through a writer's lock: ready, promptly."""
    relay, http = await relay_with(store__busy_timeout=0.05)
    with write_locked(relay.services.config.store.path), trio.fail_after(5):
        response = await http.get("/readyz")
    assert response.status_code == 200
