"""X3DH through a relay: Bob publishes a prekey bundle, Alice fetches it, both agree.

Start a relay, then run the demo against its HTTP API::

    relay serve --dev &
    python examples/x3dh_demo.py --http http://127.0.0.1:8080

It registers two fresh accounts (random names), lets Bob upload a bundle made
by the independent ``x3dh`` package (python-x3dh), fetches it over HTTP as
Alice, runs the agreement on both sides and checks that both derived the same
secret. It prints only a fingerprint of the secret (the first 8 hex digits of
its SHA-256), never the secret. Exit status 0 when both sides agree.

The relay only ever sees public keys; every private key stays in this process.
See docs/keys.md for the wire format and what each step means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import secrets
import sys
from typing import Any

import httpx
import x3dh

INFO = b"relay-x3dh-demo"  # the HKDF info string; both sides must use the same one
ONE_TIME_PREKEYS = 5


class RawKeyState(x3dh.BaseState):
    """An x3dh state whose signed-prekey signature covers the 32 raw key bytes.

    That is the relay's contract: ``signature`` is the Ed25519 signature, by the
    identity key, of the signed prekey's raw X25519 public key. (x3dh leaves
    this encoding to the application; the identity encoding is ours.)
    """

    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        return pub


def new_state() -> RawKeyState:
    """A device's key state: an Ed25519 identity key (the relay's format), SHA-256 HKDF."""
    return RawKeyState.create(x3dh.IdentityKeyFormat.ED_25519, x3dh.HashFunction.SHA_256, INFO)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def fingerprint(secret: bytes) -> str:
    """Safe to print: 32 bits of a hash, useless to an eavesdropper."""
    return hashlib.sha256(secret).hexdigest()[:8]


def check(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise stop with the relay's error."""
    if response.is_error:
        sys.exit(f"{response.request.method} {response.request.url.path}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def sign_up(http: httpx.Client, name: str) -> dict[str, Any]:
    """Register *name* with a random password and log a new device in."""
    password = secrets.token_urlsafe(18)
    check(http.post("/api/accounts", json={"username": name, "password": password}))
    return check(
        http.post(
            "/api/login",
            json={"username": name, "password": password, "device_name": "x3dh-demo"},
        )
    )


def auth(grant: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {grant['access_token']}"}


def bundle_upload(state: RawKeyState) -> tuple[dict[str, Any], dict[int, bytes]]:
    """The PUT /api/keys body for *state*'s bundle, numbering the one-time prekeys.

    x3dh has no key ids; the client chooses them (unique per identity key,
    never reused) and remembers which public key each stands for.
    """
    state.generate_pre_keys(ONE_TIME_PREKEYS)
    bundle = state.bundle
    by_id = {key_id: pub for key_id, pub in enumerate(sorted(bundle.pre_keys), start=1)}
    upload = {
        "identity_key": b64(bundle.identity_key),
        "signed_prekey": {
            "key_id": 1,
            "public_key": b64(bundle.signed_pre_key),
            "signature": b64(bundle.signed_pre_key_sig),
        },
        "one_time_prekeys": [{"key_id": k, "public_key": b64(pub)} for k, pub in by_id.items()],
    }
    return upload, by_id


def as_x3dh_bundle(fetched: dict[str, Any]) -> x3dh.Bundle:
    """A fetched device bundle (GET /api/keys/...) as x3dh wants it."""
    otk = fetched["one_time_prekey"]
    return x3dh.Bundle(
        identity_key=unb64(fetched["identity_key"]),
        signed_pre_key=unb64(fetched["signed_prekey"]["public_key"]),
        signed_pre_key_sig=unb64(fetched["signed_prekey"]["signature"]),
        pre_keys=frozenset() if otk is None else frozenset({unb64(otk["public_key"])}),
    )


def run(base_url: str) -> bool:
    tag = secrets.token_hex(4)
    alice_name, bob_name = f"alice-{tag}", f"bob-{tag}"
    with httpx.Client(base_url=base_url, timeout=30) as http:
        alice, bob = sign_up(http, alice_name), sign_up(http, bob_name)
        print(f"registered {alice_name} and {bob_name}")

        # 1. Bob's device publishes its bundle: identity key, signed prekey, one-time prekeys.
        bob_state = new_state()
        upload, bob_key_ids = bundle_upload(bob_state)
        stored = check(http.put("/api/keys", json=upload, headers=auth(bob)))
        print(f"bob uploaded his bundle ({stored['one_time_prekeys']} one-time prekeys)")

        # 2. Alice fetches the bundle of Bob's device; the relay hands her one one-time prekey.
        fetched = check(http.get(f"/api/keys/{bob_name}/{bob['device_id']}", headers=auth(alice)))
        [device] = fetched["devices"]
        otk = device["one_time_prekey"]
        otk_id = "none" if otk is None else otk["key_id"]
        print(f"alice fetched bob's bundle (one-time prekey id {otk_id})")

    # 3. Alice verifies the signed prekey's signature and derives the secret (x3dh does both),
    #    then would send Bob the header with her first message over the WebSocket.
    alice_state = new_state()
    alice_secret, alice_ad, header = asyncio.run(
        alice_state.get_shared_secret_active(as_x3dh_bundle(device))
    )

    # 4. Bob, given the header, derives the same secret and deletes the used one-time prekey.
    bob_secret, bob_ad, _ = asyncio.run(bob_state.get_shared_secret_passive(header))
    used = [k for k, pub in bob_key_ids.items() if pub == header.pre_key]
    if header.pre_key is not None:
        bob_state.delete_pre_key(header.pre_key)  # one-time: never agree on it again
    print(f"bob completed the agreement with one-time prekey id {used[0] if used else 'none'}")

    print(f"alice: secret fingerprint {fingerprint(alice_secret)}")
    print(f"bob:   secret fingerprint {fingerprint(bob_secret)}")
    if alice_secret == bob_secret and alice_ad == bob_ad:
        print(f"OK: both secrets match (sha256 fingerprint {fingerprint(alice_secret)})")
        return True
    print("FAIL: the secrets differ", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--http",
        default="http://127.0.0.1:8080",
        help="the relay's HTTP API base URL (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        return 0 if run(args.http) else 1
    except httpx.HTTPError as exc:
        print(f"cannot talk to the relay at {args.http}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
