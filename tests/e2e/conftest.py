"""Run ``relay`` as a real subprocess and read its JSON log lines."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests import pg
from tests.conftest import SECRET


class RelayProcess:
    """A ``relay serve`` child whose stderr lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_event(self, event: str, timeout: float = 20) -> dict[str, Any]:
        """The first JSON log line with this event (fails after *timeout*)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                return dict(record)
        raise AssertionError(f"no {event!r} log line; saw: {''.join(self.seen)[-2000:]}")

    def tail(self, count: int) -> list[str]:
        """The last *count* lines the process wrote (those not read yet included)."""
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return self.seen[-count:]

    def signal(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def relay_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.pop("JWT_SECRET", None)
    env.update(
        {
            "RELAY_STORE_PATH": str(tmp_path / "relay.db"),
            "RELAY_HTTP_PORT": "0",
            "RELAY_WS_PORT": "0",
            "RELAY_AUTH_ARGON2_OPSLIMIT": "1",
            "RELAY_AUTH_ARGON2_MEMLIMIT": "8192",
        }
    )
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    children: list[RelayProcess] = []

    def start(args: list[str], env: dict[str, str]) -> RelayProcess:
        child = RelayProcess(args, env, tmp_path)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
    for number, child in enumerate(children):
        # Shown by pytest for a failed test only: what each process said last.
        print(f"--- relay process {number} (pid {child.proc.pid}), last log lines:")
        print("".join(child.tail(40)))


def secret_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "JWT_SECRET": SECRET}




# -- several real relay processes on Redis and PostgreSQL --------------------------


@dataclass(frozen=True)
class Node:
    """One ``relay serve`` process of a cluster, and where it listens."""

    child: RelayProcess
    http: str
    ws: str


class Cluster:
    """Starts ``relay serve`` processes that form one relay: one PostgreSQL schema,
    one Redis prefix, one JWT secret; each process on its own ports."""

    def __init__(self, spawn: Any, env: dict[str, str], redis_url: str) -> None:
        self._spawn = spawn
        self.env = env
        self.redis_url = redis_url
        self._children: list[RelayProcess] = []

    def kill_all(self) -> None:
        """Kill every process started here (before their schema is dropped)."""
        for child in self._children:
            child.kill()

    async def start(self, **env: str) -> Node:
        """A new process (with *env* on top of the cluster's); returns once it listens.

        Waits in a thread, so the test's own Trio tasks (a proxy) keep running.
        """
        child = self._spawn(["serve"], {**self.env, **env})
        self._children.append(child)
        ports = await trio.to_thread.run_sync(child.wait_for_event, "relay.listening")
        return Node(
            child, f"http://127.0.0.1:{ports['http_port']}", f"ws://127.0.0.1:{ports['ws_port']}/ws"
        )


@pytest.fixture
def cluster(
    relay_env: dict[str, str], redis_url: str, redis_prefix: str, spawn: Any
) -> Iterator[Cluster]:
    """Relay processes sharing a fresh PostgreSQL schema and a Redis prefix of the test's own.

    Its processes are killed before the schema is dropped: a live one's
    queries and ``DROP SCHEMA`` can deadlock.
    """
    with pg.fresh_schema() as schema:
        env = secret_env(relay_env) | {
            "RELAY_LOG_FORMAT": "json",
            "RELAY_STORE_BACKEND": "postgres",
            "RELAY_STORE_DSN": schema.dsn,
            "RELAY_STORE_POOL_SIZE": "2",
            "RELAY_BUS_BACKEND": "redis",
            "RELAY_BUS_URL": redis_url,
            "RELAY_BUS_PREFIX": redis_prefix,
            "RELAY_LIMITS_BACKEND": "redis",
            "RELAY_LIMITS_URL": redis_url,
            "RELAY_LIMITS_PREFIX": redis_prefix,
        }
        cluster = Cluster(spawn, env, redis_url)
        try:
            yield cluster
        finally:
            cluster.kill_all()


__all__ = ["Cluster", "Node", "RelayProcess", "secret_env", "signal"]
