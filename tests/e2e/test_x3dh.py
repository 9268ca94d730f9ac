"""X3DH end to end: bundles made by the independent ``x3dh`` package, carried by the relay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import alice_and_bob, bearer
from tests.keyhelpers import make_x3dh_device_keys, new_x3dh_state, to_x3dh_bundle

DEMO = Path(__file__).resolve().parents[2] / "examples" / "x3dh_demo.py"


async def test_x3dh_agreement_through_the_relay(client: httpx.AsyncClient) -> None:
    """Alice's secret from Bob's fetched bundle equals Bob's secret from her header."""
    alice, bob = await alice_and_bob(client)
    upload, bob_device = make_x3dh_device_keys(5)
    assert (await client.put("/api/keys", json=upload, headers=bearer(bob))).status_code == 200

    response = await client.get(f"/api/keys/bob/{bob['device_id']}", headers=bearer(alice))
    assert response.status_code == 200
    [fetched] = response.json()["devices"]
    alice_secret, alice_ad, header = await new_x3dh_state().get_shared_secret_active(
        to_x3dh_bundle(fetched)
    )
    bob_secret, bob_ad, _ = await bob_device.state.get_shared_secret_passive(header)

    assert alice_secret == bob_secret and len(alice_secret) == 32
    assert alice_ad == bob_ad
    # The relay handed out the lowest id, and Alice's header names exactly that key.
    assert header.pre_key == bob_device.one_time[fetched["one_time_prekey"]["key_id"]]


def test_demo_script_agrees_against_relay_serve(relay_env: dict[str, str], spawn: Any) -> None:
    """examples/x3dh_demo.py against `relay serve --dev` exits 0 and reports a match."""
    child = spawn(["serve", "--dev"], relay_env)
    port = child.wait_for_event("relay.listening")["http_port"]
    result = subprocess.run(
        [sys.executable, str(DEMO), "--http", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: both secrets match" in result.stdout
