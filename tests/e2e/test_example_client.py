"""examples/chat_client.py against ``relay serve``: one message from alice to bob."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD
from tests.e2e.conftest import secret_env

CLIENT = Path(__file__).resolve().parents[2] / "examples" / "chat_client.py"


class Lines:
    """A child's merged stdout and stderr, line by line, as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no line with {text!r}; saw: {''.join(self.seen)}")

    def rest(self, timeout: float = 30) -> str:
        """Everything until the child closes its output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


def test_example_client_delivers_a_message(relay_env: dict[str, str], spawn: Any) -> None:
    """Bob receives (--receive 1) what alice sends (--send); both exit 0."""
    ports = spawn(["serve"], secret_env(relay_env)).wait_for_event("relay.listening")
    command = [
        sys.executable,
        str(CLIENT),
        "--http",
        f"http://127.0.0.1:{ports['http_port']}",
        "--ws",
        f"ws://127.0.0.1:{ports['ws_port']}/ws",
        "--timeout",
        "30",
    ]
    env = {**os.environ, "RELAY_PASSWORD": PASSWORD}
    bob = subprocess.Popen(
        [*command, "--user", "bob", "--register", "--receive", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        bob_lines = Lines(bob)
        # Once bob is connected his device exists, so the send cannot miss it;
        # he gets the message live or, had he reconnected meanwhile, by replay.
        bob_lines.wait_for("* connected as bob")
        alice = subprocess.run(
            [*command, "--user", "alice", "--register", "--to", "bob", "--send", "hello"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert alice.returncode == 0, alice.stdout + alice.stderr
        assert "* accepted " in alice.stderr
        assert bob.wait(timeout=60) == 0, bob_lines.rest()
        output = bob_lines.rest()
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait(timeout=10)
    assert "alice: hello\n" in output.splitlines(keepends=True), output


def test_example_client_remembers_its_device(
    relay_env: dict[str, str], spawn: Any, tmp_path: Path
) -> None:
    """Alice quits, bob sends, alice comes back: the message waited for her device."""
    ports = spawn(["serve"], secret_env(relay_env)).wait_for_event("relay.listening")
    command = [
        sys.executable, str(CLIENT),
        "--http", f"http://127.0.0.1:{ports['http_port']}",
        "--ws", f"ws://127.0.0.1:{ports['ws_port']}/ws",
        "--timeout", "30", "--state", str(tmp_path / "state"),
    ]
    env = {**os.environ, "RELAY_PASSWORD": PASSWORD}

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=env, timeout=60,
        )

    first = client("--user", "alice", "--register", "--receive", "0")  # logs in, then quits
    assert first.returncode == 0, first.stderr
    assert "(new)" in first.stderr
    sent = client("--user", "bob", "--register", "--to", "alice", "--send", "while you were out")
    assert sent.returncode == 0, sent.stderr
    back = client("--user", "alice", "--receive", "1")
    assert back.returncode == 0, back.stderr
    assert "(remembered)" in back.stderr
    assert "bob: while you were out" in back.stdout
