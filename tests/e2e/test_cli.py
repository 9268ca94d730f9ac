"""The ``relay`` command as a user runs it: start, refuse, stop, add users."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import secret_env


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )


def test_version(relay_env: dict[str, str]) -> None:
    """relay --version prints the version and exits 0."""
    result = run(["--version"], relay_env)
    assert result.returncode == 0 and result.stdout.startswith("relay ")


def test_serve_refuses_to_start_without_jwt_secret(relay_env: dict[str, str]) -> None:
    """No JWT_SECRET and no --dev: exit non-zero and say why."""
    result = run(["serve"], relay_env)
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr and "--dev" in result.stderr


def test_bad_config_value_stops_the_start_naming_the_key(relay_env: dict[str, str]) -> None:
    """A bad value prints one line naming the key and exits 2."""
    result = run(["serve"], {**secret_env(relay_env), "RELAY_WS_PORT": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "ws.port" in result.stderr and "RELAY_WS_PORT" in result.stderr


def test_short_jwt_secret_is_refused(relay_env: dict[str, str]) -> None:
    """A JWT_SECRET under 32 bytes stops the start without echoing it."""
    result = run(["serve"], {**relay_env, "JWT_SECRET": "too-short-secret"})
    assert result.returncode == 2
    assert "auth.jwt_secret" in result.stderr and "too-short-secret" not in result.stderr


def test_missing_config_file_is_refused(relay_env: dict[str, str]) -> None:
    """--config pointing nowhere stops the start."""
    result = run(["serve", "--config", "/nonexistent/relay.toml"], secret_env(relay_env))
    assert result.returncode == 2 and "cannot read" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dev_mode_serves_and_stops_cleanly_on_signal(
    relay_env: dict[str, str], spawn: Any, signum: int
) -> None:
    """--dev starts with an ephemeral secret, serves /healthz, and exits 0 on the signal."""
    child = spawn(["serve", "--dev"], relay_env)
    child.wait_for_event("relay.dev_secret")
    port = child.wait_for_event("relay.listening")["http_port"]
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    assert child.signal(signum) == 0
    child.wait_for_event("relay.stopped")


def test_user_add_then_login(relay_env: dict[str, str], spawn: Any) -> None:
    """relay user add NAME --password-stdin creates an account that can log in."""
    env = secret_env(relay_env)
    added = run(["user", "add", "Carol", "--password-stdin"], env, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "created user carol" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr
    child = spawn(["serve"], env)
    port = child.wait_for_event("relay.listening")["http_port"]
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/login", json={"username": "carol", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert child.signal(signal.SIGTERM) == 0


def test_user_add_refuses_a_taken_name(relay_env: dict[str, str]) -> None:
    """Adding the same user twice fails the second time with a clear message."""
    env = secret_env(relay_env)
    assert run(["user", "add", "dave", "--password-stdin"], env, PASSWORD).returncode == 0
    again = run(["user", "add", "dave", "--password-stdin"], env, PASSWORD)
    assert again.returncode == 1 and "taken" in again.stderr


def test_user_add_refuses_a_short_password(relay_env: dict[str, str]) -> None:
    """Password rules apply on the command line too."""
    result = run(["user", "add", "erin", "--password-stdin"], secret_env(relay_env), "short")
    assert result.returncode == 1 and "password" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("server", "variable"), [("http", "RELAY_HTTP_PORT"), ("ws", "RELAY_WS_PORT")]
)
def test_a_taken_port_is_one_line_naming_the_key(
    relay_env: dict[str, str], spawn: Any, server: str, variable: str
) -> None:
    """A second relay on the same port exits 2 with one line naming the port and its variable."""
    port = str(_free_port())
    first = spawn(["serve", "--dev"], {**relay_env, variable: port})
    first.wait_for_event("relay.listening")
    result = run(["serve", "--dev"], {**relay_env, variable: port, "RELAY_STORE_PATH": "x.db"})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert port in last and variable in last and f"{server}.port" in last
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr


def test_serve_on_a_terminal_says_where_it_listens(relay_env: dict[str, str]) -> None:
    """On a TTY: the HTTP URL, the ws:// URL, the store, bus and limits, the version and what
    --dev means."""
    import os
    import pty
    import time

    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--dev"],
        env=relay_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(leader, 65536)
            except OSError:
                break
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "relay 0.1.0 is running" in text
    assert "HTTP API   http://127.0.0.1:" in text and "WebSocket  ws://127.0.0.1:" in text
    assert "/ws" in text and relay_env["RELAY_STORE_PATH"] in text
    assert "Bus        in-process" in text and "Limits     in memory" in text
    assert "--dev made a random JWT secret" in text
    assert '{"' not in text.split("is running")[1]  # console log lines on a terminal, not JSON


def test_several_workers_need_the_shared_bus_and_limits(relay_env: dict[str, str]) -> None:
    """--workers 2 on the in-process bus and limits: exit 2, one line saying why."""
    result = run(["serve", "--dev", "--workers", "2"], relay_env)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "--workers 2" in line and '[bus] backend = "redis"' in line
    assert '[limits] backend = "redis"' in line


def test_a_store_that_cannot_be_opened_stops_the_start_in_one_line(
    relay_env: dict[str, str], tmp_path: Any
) -> None:
    """A file that is not a database: exit 1 and one line naming it, no traceback."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, it only looks like one to a glob" * 100)
    result = run(["serve"], {**secret_env(relay_env), "RELAY_STORE_PATH": str(garbage)})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"SQLite file {garbage}" in result.stderr and "not a database" in result.stderr


def test_an_unreachable_postgres_stops_the_start_in_one_line(relay_env: dict[str, str]) -> None:
    """Nobody at the DSN's port: exit 1, one line with where, never the password."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **secret_env(relay_env),
        "RELAY_STORE_BACKEND": "postgres",
        "RELAY_STORE_DSN": f"postgresql://relay:s3cret-pw@127.0.0.1:{port}/relay",
    }
    result = run(["serve"], env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"relay@127.0.0.1:{port}/relay" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
