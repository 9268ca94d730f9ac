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
from pathlib import Path
from typing import Any

import pytest

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


def secret_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "JWT_SECRET": SECRET}


__all__ = ["RelayProcess", "secret_env", "signal"]
