"""Shared fixtures: a config on temporary files, services, a live relay, a client."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from relay.app import Bound, open_services, serve_services
from relay.config import Config, load_config
from relay.obs import configure_logging
from relay.services import Services

SECRET = "test-secret-0123456789-abcdefghijklmnop"
TEST_TIMEOUT = float(os.environ.get("RELAY_TEST_TIMEOUT", "60"))
"""Real seconds a Trio test (fixtures included) may run before it is cancelled and failed."""


def run_with_deadline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``trio.run`` that cancels the test after TEST_TIMEOUT seconds of real time.

    A thread's timer, not a Trio deadline: tests on a MockClock would see a
    virtual deadline leap forward, and a hang is a matter of real time. The
    cancellation unwinds the test and its fixtures, so teardown still runs and
    the next test starts clean. (pytest-timeout in pyproject.toml is the
    backstop for a hang that cancellation cannot reach, such as a sync test.)
    """

    async def guarded(*inner: Any) -> Any:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            timer = threading.Timer(TEST_TIMEOUT, token.run_sync_soon, (scope.cancel,))
            timer.daemon = True
            timer.start()
            try:
                return await fn(*inner)
            finally:
                timer.cancel()
        pytest.fail(f"timed out after {TEST_TIMEOUT:g} s of real time", pytrace=False)

    return trio.run(guarded, *args, **kwargs)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every Trio test (pytest-trio's ``trio`` mark) under :func:`run_with_deadline`."""
    for item in items:
        item.own_markers[:] = [
            pytest.mark.trio(run=run_with_deadline).mark if mark.name == "trio" else mark
            for mark in item.own_markers
        ]
PASSWORD = "correct horse battery"

# Property tests: a few seconds in the normal suite; `--hypothesis-profile=fuzz`
# for a long run. No deadline: the machine may be busy, and speed is not what
# they check. Failing examples are kept under .pytest_cache (git-ignored).
_EXAMPLES = DirectoryBasedExampleDatabase(Path(__file__).parent.parent / ".pytest_cache/hypothesis")
settings.register_profile("relay", max_examples=50, deadline=None, database=_EXAMPLES)
settings.register_profile("fuzz", max_examples=2_000, deadline=None, database=_EXAMPLES)
settings.load_profile("relay")


class WallClock:
    """A settable stand-in for ``time.time`` (token and session expiry)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Defaults, on a temporary database, cheap argon2 and ephemeral ports."""
    return load_config(
        env={
            "JWT_SECRET": SECRET,
            "RELAY_STORE_PATH": str(tmp_path / "relay.db"),
            "RELAY_HTTP_PORT": "0",
            "RELAY_WS_PORT": "0",
            "RELAY_AUTH_ARGON2_OPSLIMIT": "1",
            "RELAY_AUTH_ARGON2_MEMLIMIT": "8192",
        }
    )


class LogCapture(io.StringIO):
    """Every log line written while the test ran."""

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]

    def events(self) -> list[str]:
        return [r["event"] for r in self.records()]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    buffer = LogCapture()
    configure_logging("debug", "json", stream=buffer)
    # The test's own HTTP client logs its request URLs (query tokens
    # included); those lines are the client's, not the relay's.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    yield buffer
    configure_logging("info", "json")


@pytest.fixture
async def services(config: Config, wall: WallClock, logs: LogCapture) -> AsyncIterator[Services]:
    async with open_services(config, wall_clock=wall) as built:
        yield built


@dataclass
class Relay:
    """A relay serving on ephemeral ports inside the test's nursery."""

    services: Services
    bound: Bound
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.bound.http_port}"

    async def shutdown(self) -> None:
        """Trigger the graceful shutdown and wait until both servers drained."""
        self.stop.set()
        await self.done.wait()


async def start_relay(services: Services, nursery: trio.Nursery) -> Relay:
    """Serve *services* in *nursery*; returns once both servers listen."""
    stop, done = trio.Event(), trio.Event()

    async def serve(task_status: trio.TaskStatus[Bound]) -> None:
        try:
            await serve_services(services, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            done.set()

    bound = await nursery.start(serve)
    return Relay(services, bound, stop, done)


@pytest.fixture
async def relay(services: Services, nursery: trio.Nursery) -> AsyncIterator[Relay]:
    running = await start_relay(services, nursery)
    yield running
    await running.shutdown()


RelayFactory = Callable[..., Awaitable[tuple[Relay, httpx.AsyncClient]]]


@pytest.fixture
async def relay_with(
    config: Config, wall: WallClock, logs: LogCapture, nursery: trio.Nursery
) -> AsyncIterator[RelayFactory]:
    """Start a relay with config changes: ``await relay_with(auth__login_rate_per_minute=3)``."""
    async with AsyncExitStack() as stack:

        async def start(**changes: Any) -> tuple[Relay, httpx.AsyncClient]:
            built = await stack.enter_async_context(
                open_services(config.replace(**changes), wall_clock=wall)
            )
            running = await start_relay(built, nursery)
            stack.push_async_callback(running.shutdown)
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=running.http_url, timeout=10)
            )
            return running, http

        yield start


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """Virtual time for heartbeat, expiry and timeout tests.

    The relay under test does real socket I/O and runs SQLite and argon2 in
    worker threads; with a threshold of 0 virtual time would leap while a
    thread is still working. 100 ms of real idleness first keeps the leaps to
    moments when the test is truly waiting on a timer.
    """
    return trio.testing.MockClock(autojump_threshold=0.1)


@pytest.fixture
async def client(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=relay.http_url, timeout=10) as http:
        yield http


async def alice_and_bob(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register Alice and Bob and log each in on one device; their grants."""
    return await signed_up(client, "alice"), await signed_up(client, "bob")


@pytest.fixture
async def pair(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alice and Bob, registered and logged in on one device each."""
    return await alice_and_bob(client)


async def register(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await client.post("/api/accounts", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["user_id"]
    return user_id


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/login", json={"username": username, "password": password, **extra}
    )
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    return grant


async def signed_up(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, **login_extra: Any
) -> dict[str, Any]:
    """Register *username* and log in one device: the grant, plus ``username``."""
    await register(client, username, password)
    return {**await login(client, username, password, **login_extra), "username": username}


def closes(relay: Relay, code: str) -> float:
    """How many WebSocket connections the relay closed with *code* (its metric)."""
    registry = relay.services.metrics.registry
    return registry.get_sample_value("relay_ws_closes_total", {"code": code}) or 0.0


def bearer(grant: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {grant['access_token']}"}


# -- Redis (the shared bus and limits) ------------------------------------------

REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis the shared-adapter tests use; each test keeps to keys under its own prefix."""


def _redis_reachable(url: str = REDIS_URL) -> str | None:
    """None if a Redis answers PING at *url*, else why not (a skip reason)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1) as s:
            s.settimeout(1)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"no Redis at {parts.hostname}:{parts.port} ({exc.strerror or exc})"
    if not reply.startswith(b"+PONG"):
        return f"{parts.hostname}:{parts.port} did not answer PING like Redis: {reply[:40]!r}"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis's URL; skips the test, saying why, when none is reachable."""
    reason = _redis_reachable()
    if reason is not None:
        if os.environ.get("RELAY_TEST_REQUIRE_ENGINES") == "1":  # CI: never skip them
            pytest.fail(f"needs Redis: {reason}")
        pytest.skip(f"needs Redis: {reason}")
    return REDIS_URL


async def _delete_under(url: str, prefix: str) -> None:
    from relay.limits import redis_client

    async with redis_client(url) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(keys[start : start + 500])


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards.

    Synchronous (its teardown runs once the test's Trio run is over), so that
    any fixture can ask for it with ``request.getfixturevalue``.
    """
    import secrets

    prefix = f"relaytest:{secrets.token_hex(6)}:"
    yield prefix
    trio.run(_delete_under, redis_url, prefix)


@pytest.fixture
async def hosted_relays(
    config: Config, wall: WallClock, logs: LogCapture, nursery: trio.Nursery
) -> AsyncIterator[RelayFactory]:
    """``relay_with`` for services that run tasks of their own (the Redis adapters).

    A nursery must be left by the task that entered it, so each relay's
    services are opened, served and closed by one task of the test's
    nursery; the relays shut down gracefully after the test.
    """
    hosted: list[tuple[Relay, trio.Event]] = []
    clients: list[httpx.AsyncClient] = []

    async def start(**changes: Any) -> tuple[Relay, httpx.AsyncClient]:
        closed = trio.Event()

        async def host(task_status: trio.TaskStatus[Relay]) -> None:
            try:
                async with (
                    open_services(config.replace(**changes), wall_clock=wall) as built,
                    trio.open_nursery() as inner,
                ):
                    running = await start_relay(built, inner)
                    task_status.started(running)
                    await running.done.wait()
            finally:
                closed.set()

        running: Relay = await nursery.start(host)
        hosted.append((running, closed))
        http = httpx.AsyncClient(base_url=running.http_url, timeout=10)
        clients.append(http)
        return running, http

    yield start
    for http in clients:
        await http.aclose()
    for running, closed in hosted:
        await running.shutdown()
        await closed.wait()


# -- what a piece of code imports ------------------------------------------------


def all_modules_after(code: str) -> set[str]:
    """Every module *code* leaves imported, run in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()[-1]
    return set(json.loads(out))


def modules_after(code: str, prefix: str) -> set[str]:
    """The modules named *prefix* or *prefix*.* that *code* leaves imported (fresh interpreter)."""
    return {m for m in all_modules_after(code) if m == prefix or m.startswith(prefix + ".")}
