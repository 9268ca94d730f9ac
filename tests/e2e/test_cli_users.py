"""``relay user …`` as an operator runs it: no terminal, end of input, Ctrl-C, a live relay."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests import pg
from tests.conftest import PASSWORD
from tests.e2e.conftest import secret_env

NEW_PASSWORD = "an operator's new password"


def relay(
    args: list[str], env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, which must be exactly one line (no traceback)."""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


@pytest.fixture
def env(relay_env: dict[str, str]) -> dict[str, str]:
    return secret_env(relay_env)


def add(env: dict[str, str], name: str, password: str = PASSWORD) -> None:
    result = relay(["user", "add", name, "--password-stdin"], env, password + "\n")
    assert result.returncode == 0, result.stderr


def test_user_list_shows_every_account_and_the_store(env: dict[str, str]) -> None:
    """One line per account, sorted; stderr names the database it opened."""
    add(env, "bob")
    add(env, "alice")
    result = relay(["user", "list"], env)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split()[:2] == ["USERNAME", "DEVICES"]
    assert [row.split()[0] for row in rows[1:]] == ["alice", "bob"]
    assert env["RELAY_STORE_PATH"] in result.stderr


@pytest.mark.parametrize("command", [["list"], ["delete", "x", "--yes"], ["unlock", "x"]])
def test_a_missing_database_is_one_clear_line(env: dict[str, str], command: list[str]) -> None:
    """No database at store.path: exit 1, and the line names the file it looked for."""
    if command[0] == "unlock":
        env = {**env, "RELAY_ADMIN_ENABLED": "false"}
    result = relay(["user", *command], env)
    assert result.returncode != 0
    line = one_line(result)
    assert "relay:" in line and (env["RELAY_STORE_PATH"] in line or "[admin]" in line)


def test_passwd_from_stdin_sets_the_password(env: dict[str, str], spawn: Any) -> None:
    """The new password logs in, the old one no longer does."""
    add(env, "alice")
    result = relay(["user", "passwd", "alice", "--password-stdin"], env, NEW_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    child = spawn(["serve"], env)
    port = child.wait_for_event("relay.listening")["http_port"]
    url = f"http://127.0.0.1:{port}/api/login"
    assert httpx.post(url, json={"username": "alice", "password": PASSWORD}).status_code == 401
    assert httpx.post(url, json={"username": "alice", "password": NEW_PASSWORD}).status_code == 200


def test_passwd_at_end_of_input_changes_nothing(env: dict[str, str]) -> None:
    """--password-stdin with nothing to read: one line, exit 1."""
    add(env, "alice")
    result = relay(["user", "passwd", "alice", "--password-stdin"], env, "")
    assert result.returncode == 1
    assert "end of input" in one_line(result)


def test_passwd_without_a_terminal_asks_for_password_stdin(env: dict[str, str]) -> None:
    """No TTY to prompt on and no --password-stdin: exit 2 saying what to do."""
    add(env, "alice")
    result = relay(["user", "passwd", "alice"], env)
    assert result.returncode == 2 and "--password-stdin" in one_line(result)


def test_delete_without_a_terminal_needs_yes(env: dict[str, str]) -> None:
    """Deleting cannot be confirmed without a TTY: exit 2 unless --yes."""
    add(env, "alice")
    result = relay(["user", "delete", "alice"], env)
    assert result.returncode == 2 and "--yes" in one_line(result)
    assert "alice" in relay(["user", "list"], env).stdout


def test_delete_with_yes_removes_the_account(env: dict[str, str]) -> None:
    """--yes deletes it; the name is then quarantined (cannot be added again)."""
    add(env, "alice")
    result = relay(["user", "delete", "alice", "--yes"], env)
    assert result.returncode == 0, result.stderr
    assert "alice" not in relay(["user", "list"], env).stdout
    again = relay(["user", "add", "alice", "--password-stdin"], env, PASSWORD + "\n")
    assert again.returncode == 1 and "taken" in one_line(again)


def test_ctrl_c_at_the_password_is_one_line(env: dict[str, str]) -> None:
    """SIGINT while the command waits for its password: one line, exit 130."""
    add(env, "alice")
    child = subprocess.Popen(
        [sys.executable, "-m", "relay", "user", "passwd", "alice", "--password-stdin"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)  # let it reach the read of standard input
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130
    assert stderr.strip() == "relay: interrupted; nothing changed"


def test_unlock_without_the_admin_endpoint_says_why(env: dict[str, str]) -> None:
    """Lockouts live in the running relay's memory: without [admin] the command explains."""
    add(env, "alice")
    result = relay(["user", "unlock", "alice"], env)
    assert result.returncode == 1
    assert "[admin]" in one_line(result)


async def test_operator_commands_reach_the_running_relay(env: dict[str, str], spawn: Any) -> None:
    """With [admin] on: unlock lifts a live lockout; passwd closes the user's socket (4003)."""
    live = {**env, "RELAY_ADMIN_ENABLED": "true", "RELAY_ADMIN_PORT": str(_free_port())}
    add(live, "alice")
    child = spawn(["serve"], live)
    ports = child.wait_for_event("relay.listening")
    http = f"http://127.0.0.1:{ports['http_port']}"
    for _ in range(5):
        httpx.post(f"{http}/api/login", json={"username": "alice", "password": "wrong wrong"})
    locked = httpx.post(f"{http}/api/login", json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert relay(["user", "unlock", "alice"], live).returncode == 0
    grant = httpx.post(f"{http}/api/login", json={"username": "alice", "password": PASSWORD})
    assert grant.status_code == 200
    token = grant.json()["access_token"]
    headers = [("Authorization", f"Bearer {token}")]
    url = f"ws://127.0.0.1:{ports['ws_port']}/ws"
    passwd = ["user", "passwd", "alice", "--password-stdin"]
    async with open_websocket_url(url, extra_headers=headers) as ws:
        assert json.loads(await ws.get_message())["type"] == "ready"
        changed = await trio.to_thread.run_sync(lambda: relay(passwd, live, NEW_PASSWORD + "\n"))
        assert changed.returncode == 0, changed.stderr
        assert "ended 1 session(s) on the running relay" in changed.stdout
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason is not None and closed.value.reason.code == 4003


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_database_named_is_the_one_opened(env: dict[str, str], tmp_path: Path) -> None:
    """A user added to one store is not in another: each command says which it used."""
    add(env, "alice")
    other = {**env, "RELAY_STORE_PATH": str(tmp_path / "other.db")}
    add(other, "bob")
    listed = relay(["user", "list"], other)
    assert "bob" in listed.stdout and "alice" not in listed.stdout
    assert str(tmp_path / "other.db") in listed.stderr


def test_user_commands_work_on_a_postgres_store(env: dict[str, str]) -> None:
    """add, list, passwd and delete on PostgreSQL; each names it as user@host:port/db."""
    pg.require_postgres()
    with pg.fresh_schema() as schema:
        on_pg = {**env, "RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": schema.dsn}
        add(on_pg, "alice")
        listed = relay(["user", "list"], on_pg)
        assert listed.returncode == 0, listed.stderr
        assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == ["alice"]
        assert "account(s) in PostgreSQL " in listed.stderr and "SQLite" not in listed.stderr
        reset = relay(["user", "passwd", "alice", "--password-stdin"], on_pg, NEW_PASSWORD + "\n")
        assert reset.returncode == 0, reset.stderr
        deleted = relay(["user", "delete", "alice", "--yes"], on_pg)
        assert deleted.returncode == 0, deleted.stderr
        assert relay(["user", "list"], on_pg).stdout.splitlines()[1:] == []


def test_an_unreachable_postgres_store_is_one_line_without_the_password(
    env: dict[str, str],
) -> None:
    """A DSN nobody answers: exit 1, one line naming host and port, never the password."""
    dsn = f"postgresql://relay:s3cret-pw@127.0.0.1:{_free_port()}/relay"
    on_pg = {**env, "RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": dsn}
    result = relay(["user", "list"], on_pg)
    assert result.returncode == 1
    line = one_line(result)
    assert "the store is unavailable" in line and "relay@127.0.0.1:" in line
    assert "s3cret-pw" not in result.stderr + result.stdout
