"""A live ``relay serve`` for schemathesis: its accounts, tokens and a tally of answers.

``RELAY_FUZZ_EXAMPLES`` sets the generated requests per operation (default 25,
a few seconds); ``RELAY_FUZZ_REPORT=path.json`` writes the tally there.
The long run (docs/security.md, "Fuzzing"):

    RELAY_FUZZ_EXAMPLES=1000 RELAY_FUZZ_REPORT=fuzz.json .venv/bin/python -m pytest tests/fuzz -s
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.e2e.conftest import RelayProcess
from tests.keyhelpers import make_device_keys

EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "25"))
REPORT = os.environ.get("RELAY_FUZZ_REPORT")
# The harness makes its own accounts and logins from another loopback address,
# so that they never spend the per-IP login budget of the fuzzer (127.0.0.1).
HARNESS_ADDRESS = "127.0.0.2"
FUZZER, PEER = "fuzzer", "fuzzpeer"
DROP = "fuzzdrop"  # the account whose every session POST /api/logout/all ends
KEEPER = "fuzzkeeper"  # the account whose password changes (the caller's session stays)
DOOMED = "fuzzdoomed"  # the account to delete (its own lockout, so a real password gets through)
SPARE_SESSIONS = 4
REFRESH_AFTER = 600  # seconds; access tokens live 900 (auth.access_token_ttl)


@dataclass
class Tally:
    """How many requests each operation got, by status."""

    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    frames: Counter[str] = field(default_factory=Counter)  # WebSocket frames by outcome

    def record(self, operation: str, status: int) -> None:
        self.counts[(operation, status)] += 1

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.counts.items() if status >= 500)

    def report(self) -> dict[str, Any]:
        by_operation: dict[str, dict[str, int]] = {}
        for (operation, status), n in sorted(self.counts.items()):
            by_operation.setdefault(operation, {})[str(status)] = n
        return {
            "examples_per_operation": EXAMPLES,
            "requests": self.requests,
            "server_errors": self.server_errors,
            "ws_frames": sum(self.frames.values()),
            "ws_frames_by_outcome": dict(sorted(self.frames.items())),
            "by_operation": by_operation,
        }


class Session:
    """One logged-in session of the harness; its access token refreshed before it expires."""

    def __init__(self, harness: httpx.Client, grant: dict[str, Any]) -> None:
        self.harness = harness
        self.grant = grant
        self.issued = time.monotonic()

    @property
    def device_id(self) -> str:
        return str(self.grant["device_id"])

    def access_token(self) -> str:
        if time.monotonic() - self.issued > REFRESH_AFTER:
            response = self.harness.post(
                "/api/token/refresh", json={"refresh_token": self.grant["refresh_token"]}
            )
            if response.status_code == 200:  # else ended (deleted, logged out): 401s are fine
                self.grant = response.json()
            self.issued = time.monotonic()
        return str(self.grant["access_token"])


@dataclass
class Target:
    """The relay under test and the real accounts that let requests reach success paths."""

    base_url: str
    ws_url: str
    process: RelayProcess
    harness: httpx.Client
    primary: Session  # FUZZER's: the token of every Bearer request, and a WebSocket
    spares: list[dict[str, Any]]  # more sessions of FUZZER's device, to delete or refresh
    spare_device: str  # a second device of FUZZER, to delete
    peer: Session  # PEER's: a device with keys to fetch, and a WebSocket
    tally: Tally
    drop: Session  # DROP's device (logout/all gets a fresh session of it each time)
    keeper: Session  # KEEPER's: the token of password changes
    doomed: Session  # DOOMED's: the token of account deletion
    # The last session to be ended, by account: the fallback when the harness's
    # own logins are rate-limited (never the primary: that would end the run's).
    last: dict[str, str] = field(default_factory=dict)

    def fresh_token(self, username: str, device_id: str) -> str:
        """A new session of *username* (to be ended), or the last one if a login is refused."""
        response = self.harness.post(
            "/api/login",
            json={"username": username, "password": PASSWORD, "device_id": device_id},
        )
        if response.status_code == 200:
            self.last[username] = response.json()["access_token"]
        return self.last[username]

    def token_for(self, path: str) -> str:
        """The Bearer token for a request to *path*."""
        if path == "/api/logout":  # ends the session: a fresh one each time
            return self.fresh_token(FUZZER, self.primary.device_id)
        if path == "/api/logout/all":  # ends every session of the account
            return self.fresh_token(DROP, self.drop.device_id)
        if path == "/api/account/delete":
            return self.doomed.access_token()
        if path == "/api/account/password":
            return self.keeper.access_token()
        return self.primary.access_token()

    def primary_alive(self) -> bool:
        """Is the session every Bearer request uses still good? (A run that ended it tests 401s.)"""
        headers = {"Authorization": f"Bearer {self.primary.access_token()}"}
        return self.harness.get("/api/devices", headers=headers).status_code == 200

    def internal_errors(self) -> list[str]:
        """The relay's log lines about internal errors so far."""
        while not self.process.lines.empty():
            self.process.seen.append(self.process.lines.get())
        return [line for line in self.process.seen if "internal_error" in line]


def _grant(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/login", json={"password": PASSWORD, **extra})
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    return grant


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    """Every answer of the run; summed up at the end (and written to RELAY_FUZZ_REPORT)."""
    counts = Tally()
    yield counts
    report = counts.report()
    summary = {k: v for k, v in report.items() if not k.startswith("by_")}
    print(f"\nfuzz: {json.dumps(summary)}")
    if REPORT:
        Path(REPORT).write_text(json.dumps(report, indent=2) + "\n")


@contextmanager
def serving(workdir: Path, tally: Tally, **settings: str) -> Iterator[Target]:
    """``relay serve`` with *settings* (environment variables) over the test defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        {
            "JWT_SECRET": SECRET,
            "RELAY_STORE_PATH": str(workdir / "relay.db"),
            "RELAY_HTTP_PORT": "0",
            "RELAY_WS_PORT": "0",
            "RELAY_AUTH_ARGON2_OPSLIMIT": "1",
            "RELAY_AUTH_ARGON2_MEMLIMIT": "8192",
            **settings,
        }
    )
    process = RelayProcess(["serve"], env, workdir)
    try:
        ports = process.wait_for_event("relay.listening")
        base_url = f"http://127.0.0.1:{ports['http_port']}"
        transport = httpx.HTTPTransport(local_address=HARNESS_ADDRESS)
        with httpx.Client(base_url=base_url, transport=transport, timeout=10) as harness:
            for name in (FUZZER, PEER, DROP, KEEPER, DOOMED):
                created = harness.post(
                    "/api/accounts", json={"username": name, "password": PASSWORD}
                )
                assert created.status_code == 201, created.text
            primary = _grant(harness, username=FUZZER)
            device = primary["device_id"]
            spares = [
                _grant(harness, username=FUZZER, device_id=device) for _ in range(SPARE_SESSIONS)
            ]
            spare_device = _grant(harness, username=FUZZER)["device_id"]
            peer = Session(harness, _grant(harness, username=PEER))
            drop = Session(harness, _grant(harness, username=DROP))
            keeper = Session(harness, _grant(harness, username=KEEPER))
            doomed = Session(harness, _grant(harness, username=DOOMED))
            upload, _ = make_device_keys(100)
            headers = {"Authorization": f"Bearer {peer.access_token()}"}
            assert harness.put("/api/keys", json=upload, headers=headers).status_code == 200
            yield Target(
                base_url,
                f"ws://127.0.0.1:{ports['ws_port']}/ws",
                process,
                harness,
                Session(harness, primary),
                spares,
                spare_device,
                peer,
                tally,
                drop,
                keeper,
                doomed,
                last={
                    FUZZER: _grant(harness, username=FUZZER, device_id=device)["access_token"],
                    DROP: drop.access_token(),
                },
            )
    finally:
        process.kill()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, tally: Tally) -> Iterator[Target]:
    """``relay serve`` on its defaults (limits included), with FUZZER and PEER set up."""
    with serving(tmp_path_factory.mktemp("fuzz"), tally) as running:
        yield running


@pytest.fixture(scope="module")
def ws_target(tmp_path_factory: pytest.TempPathFactory, tally: Tally) -> Iterator[Target]:
    """As :func:`target`, but any number of WebSocket handshakes (two per example)."""
    unlimited = str(10**9)
    with serving(
        tmp_path_factory.mktemp("fuzz-ws"),
        tally,
        RELAY_WS_HANDSHAKE_RATE_PER_MINUTE=unlimited,
        RELAY_WS_HANDSHAKE_BURST=unlimited,
        RELAY_WS_HANDSHAKE_RATE_PER_USER_PER_MINUTE=unlimited,
    ) as running:
        yield running
