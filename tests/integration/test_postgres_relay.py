"""The whole relay on PostgreSQL: messages stored and replayed; the database gone and back.

The relay runs in-process on a schema of its own, reached through a
:class:`~tests.tcpproxy.TcpProxy` that the test cuts and restores: while
PostgreSQL is unreachable a send is refused with ``store_unavailable`` (not
accepted, not lost) and HTTP answers 503; when it returns, the same relay
serves again without a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
from psycopg import conninfo

from tests import pg
from tests.conftest import LogCapture, Relay, RelayFactory, alice_and_bob, bearer
from tests.tcpproxy import TcpProxy
from tests.wsclient import WsClient, connect


@pytest.fixture
def schema() -> Iterator[pg.Schema]:
    with pg.fresh_schema() as fresh:
        yield fresh


@pytest.fixture
def postgres() -> None:
    """Skip, saying why, without a test server (here: a skip in Trio code loses its reason)."""
    pg.require_postgres()


@pytest.fixture
async def proxy(postgres: None, nursery: trio.Nursery) -> AsyncIterator[TcpProxy]:
    running = TcpProxy(*pg.target())
    await running.start(nursery)
    yield running
    await running.stop()


@pytest.fixture
async def on_postgres(
    schema: pg.Schema, proxy: TcpProxy, relay_with: RelayFactory
) -> tuple[Relay, httpx.AsyncClient]:
    """A relay whose store is the schema, through the proxy; a call waits at most 0.5 s.

    The DSN carries a password (the test server trusts any), which must never
    reach a log line.
    """
    return await relay_with(
        store__backend="postgres",
        store__dsn=conninfo.make_conninfo(schema.via(proxy.port), password=PASSWORD),
        store__pool_size=2,
        store__busy_timeout=0.5,
    )


PASSWORD = "dsn-s3cret-pw"


async def accepted_id(ws: WsClient, cid: str, body: Any) -> str:
    await ws.send(type="send", id=cid, to="bob", body=body)
    frame = await ws.expect("accepted")
    assert frame["id"] == cid
    message_id: str = frame["message_id"]
    return message_id


async def test_a_message_is_stored_in_postgres_and_replayed(
    on_postgres: tuple[Relay, httpx.AsyncClient], schema: pg.Schema
) -> None:
    """Alice's message to offline Bob is in PostgreSQL, and replayed when Bob connects."""
    relay, http = on_postgres
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        message_id = await accepted_id(a, "c1", {"ct": "AAAA"})
    with schema.connect() as conn:
        row = conn.execute("SELECT client_id FROM messages WHERE message_id = %s", (message_id,))
        assert row.fetchone() == (b"c1",)
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        message = await b.expect("message")
    assert (message["id"], message["from"]) == (message_id, "alice")
    assert message["body"] == {"ct": "AAAA"}


async def test_postgres_unreachable_refuses_then_service_resumes(
    on_postgres: tuple[Relay, httpx.AsyncClient], proxy: TcpProxy, logs: LogCapture
) -> None:
    """Down: store_unavailable, HTTP 503, not ready. Back: the resend is accepted, both arrive."""
    relay, http = on_postgres
    alice, bob = await alice_and_bob(http)
    async with connect(relay, alice["access_token"]) as a:
        await a.expect("ready")
        before = await accepted_id(a, "c1", "before")

        await proxy.stop()
        await a.send(type="send", id="c2", to="bob", body="during")
        error = await a.expect("error")
        assert (error["code"], error["ref"]) == ("store_unavailable", "c2")
        devices = await http.get("/api/devices", headers=bearer(alice))
        assert (devices.status_code, devices.json()["error"]) == (503, "store_unavailable")
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["store"]) == (503, "unreachable")

        await proxy.start()
        during = await resend_until_accepted(a, "c2", "during")
    assert (await http.get("/api/devices", headers=bearer(alice))).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    async with connect(relay, bob["access_token"]) as b:
        await b.expect("ready")
        got = [await b.expect("message") for _ in range(2)]
    assert [(m["id"], m["body"]) for m in got] == [(before, "before"), (during, "during")]
    assert "store.batch_failed" in logs.events() and "http.store_unavailable" in logs.events()
    assert PASSWORD not in logs.getvalue()


async def resend_until_accepted(ws: WsClient, cid: str, body: Any) -> str:
    """Send *cid* again until the store takes it (real time: the pool reconnects for real)."""
    with trio.fail_after(20):
        while True:
            await ws.send(type="send", id=cid, to="bob", body=body)
            frame = await ws.recv()
            if frame["type"] == "accepted":
                message_id: str = frame["message_id"]
                return message_id
            assert (frame["type"], frame["code"]) == ("error", "store_unavailable"), frame
            await trio.sleep(0.1)


async def test_nul_characters_in_client_text_are_kept_and_harm_nothing(
    on_postgres: tuple[Relay, httpx.AsyncClient],
) -> None:
    """PostgreSQL text cannot hold NUL, so the store keeps client text as bytes: a device
    name, a send id and an ack id with a NUL work like any other, and fail no batch."""
    relay, http = on_postgres
    alice, bob = await alice_and_bob(http)
    named = await http.post(
        "/api/login",
        json={"username": "alice", "password": "correct horse battery", "device_name": "a\x00b"},
    )
    devices = (await http.get("/api/devices", headers=bearer(named.json()))).json()["devices"]
    assert "a\x00b" in [d["name"] for d in devices]
    async with connect(relay, alice["access_token"]) as a, connect(
        relay, bob["access_token"]
    ) as b:
        await a.expect("ready")
        await b.expect("ready")
        await a.send(type="send", id="nul\x00id", to="bob", body="x")
        await a.send(type="send", id="plain", to="bob", body="y")
        assert [(await a.expect("accepted"))["id"] for _ in range(2)] == ["nul\x00id", "plain"]
        first, second = await b.expect("message"), await b.expect("message")
        assert (first["body"], second["body"]) == ("x", "y")
        await b.send(type="ack", ids=["m\x00", first["id"], second["id"]])
    store = relay.services.store
    with trio.fail_after(5):  # acks are committed in batches (store.ack_delay)
        while await store.pending(bob["device_id"], 0, 10):
            await trio.sleep(0.05)
