"""The HTTP port of a real ``relay serve``, driven by clients in another process."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import secret_env


def test_connections_the_client_closed_give_their_slot_back_at_once(
    relay_env: dict[str, str], spawn: Any
) -> None:
    """Short connections closed by the client never pile up against the per-IP cap.

    Hypercorn kept a connection whose client had hung up open (CLOSE-WAIT)
    until its keep-alive timer ran out, so the 6th short-lived client of one
    address was refused 429 for the next 15 s.
    """
    env = {**secret_env(relay_env), "RELAY_HTTP_MAX_CONNECTIONS_PER_IP": "5"}
    port = spawn(["serve"], env).wait_for_event("relay.listening")["http_port"]
    statuses = []
    for _ in range(20):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # a connection each
            statuses.append(client.get("/healthz").status_code)
    assert statuses == [200] * 20
