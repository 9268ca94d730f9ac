"""PUT /api/keys, GET /api/keys/count and bundle fetches over real sockets."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from nacl.signing import SigningKey

from tests.conftest import (
    LogCapture,
    Relay,
    RelayFactory,
    WallClock,
    bearer,
    login,
    signed_up,
)
from tests.keyhelpers import DeviceKeys, b64, make_device_keys

Grant = dict[str, Any]
Upload = dict[str, Any]

# A relay whose fetch limits never get in the way of the test.
UNLIMITED = {
    "keys__fetch_rate_per_minute": 10_000,
    "keys__fetch_rate_per_user_per_minute": 10_000,
    "keys__target_fetch_rate_per_minute": 10_000,
}


async def account(client: httpx.AsyncClient, name: str) -> Grant:
    return await signed_up(client, name)


async def device(client: httpx.AsyncClient, owner: Grant, name: str) -> Grant:
    """Log another device of *owner*'s account in."""
    return {
        **await login(client, owner["username"], device_name=name),
        "username": owner["username"],
    }


async def relogin(client: httpx.AsyncClient, grant: Grant) -> Grant:
    """A fresh access token for the same device (after the wall clock moved on)."""
    fresh = await login(client, grant["username"], device_id=grant["device_id"])
    return {**fresh, "username": grant["username"]}


async def put(client: httpx.AsyncClient, grant: Grant, body: Upload | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**bearer(grant), "Content-Type": "application/json"}
    return await client.put("/api/keys", content=content, headers=headers)


async def uploaded(
    client: httpx.AsyncClient, grant: Grant, n: int = 5, **options: Any
) -> tuple[Upload, DeviceKeys]:
    """Upload a fresh valid bundle for *grant*'s device; fail the test unless it is taken."""
    body, keys = make_device_keys(n, **options)
    response = await put(client, grant, body)
    assert response.status_code == 200, response.text
    return body, keys


async def count(client: httpx.AsyncClient, grant: Grant) -> dict[str, Any]:
    response = await client.get("/api/keys/count", headers=bearer(grant))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def fetch(
    client: httpx.AsyncClient, fetcher: Grant, username: str, device_id: str | None = None
) -> httpx.Response:
    path = f"/api/keys/{username}" if device_id is None else f"/api/keys/{username}/{device_id}"
    return await client.get(path, headers=bearer(fetcher))


async def fetch_one(client: httpx.AsyncClient, fetcher: Grant, owner: Grant) -> dict[str, Any]:
    """The owner's device's bundle as *fetcher* gets it (consuming a one-time prekey)."""
    response = await fetch(client, fetcher, owner["username"], owner["device_id"])
    assert response.status_code == 200, response.text
    [bundle] = response.json()["devices"]
    result: dict[str, Any] = bundle
    return result


def bundle_of(owner: Grant, body: Upload, one_time: int | None) -> dict[str, Any]:
    """The bundle a fetch should return: *body* as uploaded, with its *one_time*-th prekey."""
    return {
        "device_id": owner["device_id"],
        "identity_key": body["identity_key"],
        "signed_prekey": body["signed_prekey"],
        "one_time_prekey": None if one_time is None else body["one_time_prekeys"][one_time],
    }


async def assert_unchanged(
    client: httpx.AsyncClient,
    owner: Grant,
    fetcher: Grant,
    before: dict[str, Any],
    body: Upload,
    next_one_time: int = 0,
) -> None:
    """The owner's count is still *before* and a fetch still yields *body*'s next prekey."""
    assert await count(client, owner) == before
    assert await fetch_one(client, fetcher, owner) == bundle_of(owner, body, next_one_time)


# -- upload -----------------------------------------------------------------


async def test_upload_reports_the_stored_prekey_count(client: httpx.AsyncClient) -> None:
    """200 with the number of unused one-time prekeys and identity_changed false."""
    bob = await account(client, "bob")
    body, _ = make_device_keys(5)
    response = await put(client, bob, body)
    assert response.status_code == 200
    assert response.json() == {"one_time_prekeys": 5, "identity_changed": False}


async def test_upload_without_one_time_prekeys_is_accepted(client: httpx.AsyncClient) -> None:
    """An identity key and a signed prekey alone make a (prekey-less) bundle."""
    bob = await account(client, "bob")
    body, _ = make_device_keys(0)
    response = await put(client, bob, body)
    assert response.status_code == 200
    assert response.json()["one_time_prekeys"] == 0


async def test_count_before_any_upload_is_empty(client: httpx.AsyncClient) -> None:
    """A device without keys has 0 prekeys and no signed prekey time or age."""
    bob = await account(client, "bob")
    assert await count(client, bob) == {
        "one_time_prekeys": 0,
        "signed_prekey_uploaded_at": None,
        "signed_prekey_age": None,
    }


async def test_count_shows_the_callers_unused_prekeys(
    client: httpx.AsyncClient, wall: WallClock
) -> None:
    """The count is what was uploaded, less what was fetched since."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob, 5)
    await fetch_one(client, alice, bob)
    assert await count(client, bob) == {
        "one_time_prekeys": 4,
        "signed_prekey_uploaded_at": wall.now,
        "signed_prekey_age": 0.0,
    }


async def test_count_is_per_device(client: httpx.AsyncClient) -> None:
    """Another device of the same account has its own (here empty) pool."""
    phone = await account(client, "bob")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone, 5)
    assert (await count(client, laptop))["one_time_prekeys"] == 0


async def test_count_shows_the_signed_prekey_age(
    client: httpx.AsyncClient, wall: WallClock
) -> None:
    """signed_prekey_age is the seconds since the signed prekey was uploaded."""
    bob = await account(client, "bob")
    uploaded_at = wall.now
    await uploaded(client, bob)
    wall.advance(7 * 86400)
    status = await count(client, await relogin(client, bob))
    assert status["signed_prekey_uploaded_at"] == uploaded_at
    assert status["signed_prekey_age"] == 7 * 86400


async def test_reupload_replaces_the_signed_prekey_and_adds_one_time_prekeys(
    client: httpx.AsyncClient, wall: WallClock
) -> None:
    """Same identity: the new signed prekey replaces the old, new prekeys join the pool."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    first, keys = await uploaded(client, bob, 3)
    wall.advance(3600)
    bob, alice = await relogin(client, bob), await relogin(client, alice)
    second, _ = make_device_keys(2, first_key_id=4, signed_prekey_id=2, identity=keys.identity)
    response = await put(client, bob, second)
    assert response.json() == {"one_time_prekeys": 5, "identity_changed": False}
    assert (await count(client, bob))["signed_prekey_age"] == 0.0
    fetched = [await fetch_one(client, alice, bob) for _ in range(5)]
    assert {f["signed_prekey"]["key_id"] for f in fetched} == {2}
    assert [f["one_time_prekey"] for f in fetched] == [
        *first["one_time_prekeys"],
        *second["one_time_prekeys"],
    ]


async def test_new_identity_key_replaces_the_whole_bundle(client: httpx.AsyncClient) -> None:
    """A different identity key drops the old prekeys; old key ids may be used again."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob, 5)
    fresh, _ = make_device_keys(2)  # new identity, ids 1 and 2 again
    response = await put(client, bob, fresh)
    assert response.json() == {"one_time_prekeys": 2, "identity_changed": True}
    assert await fetch_one(client, alice, bob) == bundle_of(bob, fresh, 0)
    assert await fetch_one(client, alice, bob) == bundle_of(bob, fresh, 1)
    assert await fetch_one(client, alice, bob) == bundle_of(bob, fresh, None)


async def test_identity_change_is_logged_as_a_security_event(
    client: httpx.AsyncClient, logs: LogCapture
) -> None:
    """keys.identity_changed at warning level, naming the user and the device."""
    bob = await account(client, "bob")
    await uploaded(client, bob)
    assert "keys.identity_changed" not in logs.events()
    await uploaded(client, bob)
    [record] = [r for r in logs.records() if r["event"] == "keys.identity_changed"]
    assert record["level"] == "warning"
    assert (record["user_id"], record["device_id"]) == (bob["user_id"], bob["device_id"])


# -- refused uploads --------------------------------------------------------

Mutation = Callable[[Upload, DeviceKeys], Upload | bytes]


def _with(body: Upload, path: str, value: Any) -> Upload:
    """A deep copy of *body* with the value at a dotted path (list index as digit) set."""
    copy: Any = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = copy
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    result: Upload = copy
    return result


def _resign(body: Upload, signer: SigningKey, message: bytes | None = None) -> Upload:
    spk = base64.b64decode(body["signed_prekey"]["public_key"])
    signature = signer.sign(spk if message is None else message).signature
    return _with(body, "signed_prekey.signature", b64(signature))


def _urlsafe(value: str) -> str:
    """The same bytes in the urlsafe alphabet (forced to contain - or _)."""
    raw = base64.b64decode(value)
    return base64.urlsafe_b64encode(b"\xfb\xff" + raw[2:]).decode()


REFUSALS: dict[str, tuple[Mutation, str, str]] = {
    "signature_over_other_bytes": (
        lambda b, k: _resign(b, k.identity, b"not the signed prekey"),
        "bad_signature",
        "signed_prekey.signature",
    ),
    "signature_by_another_key": (
        lambda b, k: _resign(b, SigningKey.generate()),
        "bad_signature",
        "signed_prekey.signature",
    ),
    "signature_for_another_prekey": (
        lambda b, k: _with(b, "signed_prekey.public_key", b64(bytes(32))),
        "bad_signature",
        "signed_prekey.signature",
    ),
    "urlsafe_base64": (
        lambda b, k: _with(b, "identity_key", _urlsafe(b["identity_key"])),
        "bad_base64",
        "identity_key",
    ),
    "unpadded_base64": (
        lambda b, k: _with(b, "signed_prekey.public_key", b["signed_prekey"]["public_key"][:-1]),
        "bad_base64",
        "signed_prekey.public_key",
    ),
    "not_base64": (
        lambda b, k: _with(b, "one_time_prekeys.2.public_key", "not base64 at all!"),
        "bad_base64",
        "one_time_prekeys[2].public_key",
    ),
    "short_identity_key": (
        lambda b, k: _with(b, "identity_key", b64(bytes(31))),
        "bad_key_length",
        "identity_key",
    ),
    "long_signed_prekey": (
        lambda b, k: _with(b, "signed_prekey.public_key", b64(bytes(33))),
        "bad_key_length",
        "signed_prekey.public_key",
    ),
    "short_signature": (
        lambda b, k: _with(b, "signed_prekey.signature", b64(bytes(63))),
        "bad_key_length",
        "signed_prekey.signature",
    ),
    "short_one_time_prekey": (
        lambda b, k: _with(b, "one_time_prekeys.0.public_key", b64(bytes(16))),
        "bad_key_length",
        "one_time_prekeys[0].public_key",
    ),
    "duplicate_key_ids": (
        lambda b, k: _with(b, "one_time_prekeys.1.key_id", b["one_time_prekeys"][0]["key_id"]),
        "duplicate_key_id",
        "one_time_prekeys[1].key_id",
    ),
    "negative_key_id": (
        lambda b, k: _with(b, "one_time_prekeys.0.key_id", -1),
        "invalid_request",
        "one_time_prekeys[0].key_id",
    ),
    "missing_signed_prekey": (
        lambda b, k: {n: v for n, v in b.items() if n != "signed_prekey"},
        "invalid_request",
        "signed_prekey",
    ),
    "malformed_json": (
        lambda b, k: json.dumps(b).encode()[:-1],
        "malformed_json",
        "",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_upload_changes_nothing(client: httpx.AsyncClient, case: str) -> None:
    """A bad re-upload is 400 with a code naming the fault and the field, and stores nothing."""
    mutate, code, field = REFUSALS[case]
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, keys = await uploaded(client, bob, 3)
    before = await count(client, bob)
    # Same identity and fresh ids: without the fault this upload would be taken.
    bad = mutate(make_device_keys(3, first_key_id=10, identity=keys.identity)[0], keys)
    response = await put(client, bob, bad)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert field in response.json()["message"]
    await assert_unchanged(client, bob, alice, before, body)


async def test_refused_first_upload_leaves_the_device_without_keys(
    client: httpx.AsyncClient,
) -> None:
    """A bad first upload is 400 and the device still has no bundle to fetch."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, _ = make_device_keys(3)
    response = await put(client, bob, _resign(body, SigningKey.generate()))
    assert response.json()["error"] == "bad_signature"
    assert (await count(client, bob))["signed_prekey_uploaded_at"] is None
    assert (await fetch(client, alice, "bob")).json()["error"] == "no_keys"


async def test_key_id_already_uploaded_is_refused_whole(client: httpx.AsyncClient) -> None:
    """An id uploaded before is 400 key_id_reused; the new ids beside it are not stored."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, keys = await uploaded(client, bob, 3)
    before = await count(client, bob)
    again, _ = make_device_keys(2, first_key_id=3, signed_prekey_id=2, identity=keys.identity)
    response = await put(client, bob, again)  # ids 3 (taken) and 4 (new)
    assert response.status_code == 400
    assert response.json()["error"] == "key_id_reused"
    assert "3" in response.json()["message"]
    await assert_unchanged(client, bob, alice, before, body)


async def test_key_id_already_consumed_is_refused(client: httpx.AsyncClient) -> None:
    """An id handed out by a fetch can never be uploaded again under the same identity."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, keys = await uploaded(client, bob, 3)
    assert (await fetch_one(client, alice, bob))["one_time_prekey"]["key_id"] == 1
    before = await count(client, bob)
    again, _ = make_device_keys(1, first_key_id=1, identity=keys.identity)
    response = await put(client, bob, again)
    assert response.status_code == 400
    assert response.json()["error"] == "key_id_reused"
    await assert_unchanged(client, bob, alice, before, body, next_one_time=1)


async def test_too_many_prekeys_in_one_upload_is_refused(relay_with: RelayFactory) -> None:
    """More than keys.max_prekeys_per_upload is 400 too_many_prekeys; the cap itself is fine."""
    _, client = await relay_with(keys__max_prekeys_per_upload=3)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, keys = await uploaded(client, bob, 3)
    before = await count(client, bob)
    response = await put(
        client, bob, make_device_keys(4, first_key_id=10, identity=keys.identity)[0]
    )
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_prekeys"
    await assert_unchanged(client, bob, alice, before, body)


async def test_upload_without_a_token_is_refused(client: httpx.AsyncClient) -> None:
    """No Bearer token: 401, and the device's keys stay as they were."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, _ = await uploaded(client, bob, 3)
    before = await count(client, bob)
    response = await client.put("/api/keys", json=make_device_keys(3)[0])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    await assert_unchanged(client, bob, alice, before, body)


# -- fetch ------------------------------------------------------------------


async def test_fetch_by_user_returns_every_device_with_keys(client: httpx.AsyncClient) -> None:
    """One bundle per device that uploaded keys, oldest device first; keyless devices skipped."""
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await device(client, phone, "tablet")  # never uploads
    phone_keys, _ = await uploaded(client, phone, 2)
    laptop_keys, _ = await uploaded(client, laptop, 2)
    response = await fetch(client, alice, "bob")
    assert response.status_code == 200
    assert response.json() == {
        "username": "bob",
        "devices": [bundle_of(phone, phone_keys, 0), bundle_of(laptop, laptop_keys, 0)],
    }


async def test_fetch_folds_the_usernames_case(client: httpx.AsyncClient) -> None:
    """/api/keys/BOB is bob's bundle, answered under the canonical name."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob)
    response = await fetch(client, alice, "BoB")
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


async def test_fetch_by_device_returns_that_device_only(client: httpx.AsyncClient) -> None:
    """/api/keys/{user}/{device} is one bundle and consumes nothing on the other devices."""
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone, 2)
    laptop_keys, _ = await uploaded(client, laptop, 2)
    response = await fetch(client, alice, "bob", laptop["device_id"])
    assert response.json() == {"username": "bob", "devices": [bundle_of(laptop, laptop_keys, 0)]}
    assert (await count(client, phone))["one_time_prekeys"] == 2


async def test_each_fetch_consumes_one_prekey_per_device(client: httpx.AsyncClient) -> None:
    """Two fetches by user hand out each device's two lowest ids, one apiece."""
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone, 3)
    await uploaded(client, laptop, 3)
    handed = []
    for _ in range(2):
        devices = (await fetch(client, alice, "bob")).json()["devices"]
        handed.append([d["one_time_prekey"]["key_id"] for d in devices])
    assert handed == [[1, 1], [2, 2]]
    assert (await count(client, phone))["one_time_prekeys"] == 1
    assert (await count(client, laptop))["one_time_prekeys"] == 1


async def test_exhausted_device_yields_a_null_prekey(client: httpx.AsyncClient) -> None:
    """With no one-time prekey left the fetch is still 200, with one_time_prekey null."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, _ = await uploaded(client, bob, 1)
    assert await fetch_one(client, alice, bob) == bundle_of(bob, body, 0)
    assert await fetch_one(client, alice, bob) == bundle_of(bob, body, None)
    assert (await count(client, bob))["one_time_prekeys"] == 0


async def test_fetch_of_an_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    """404 user_not_found."""
    alice = await account(client, "alice")
    response = await fetch(client, alice, "nobody")
    assert response.status_code == 404
    assert response.json()["error"] == "user_not_found"


async def test_fetch_of_an_unknown_device_is_404(client: httpx.AsyncClient) -> None:
    """404 device_not_found for a device id that does not exist."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob)
    response = await fetch(client, alice, "bob", "no-such-device")
    assert response.status_code == 404
    assert response.json()["error"] == "device_not_found"


async def test_fetch_of_another_users_device_is_404(client: httpx.AsyncClient) -> None:
    """carol's device under bob's name is device_not_found, and carol's keys stay unused."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    carol = await account(client, "carol")
    await uploaded(client, bob)
    await uploaded(client, carol, 3)
    response = await fetch(client, alice, "bob", carol["device_id"])
    assert response.status_code == 404
    assert response.json()["error"] == "device_not_found"
    assert (await count(client, carol))["one_time_prekeys"] == 3


async def test_fetch_of_a_user_without_keys_is_404(client: httpx.AsyncClient) -> None:
    """404 no_keys when none of the user's devices uploaded keys."""
    await account(client, "bob")
    alice = await account(client, "alice")
    response = await fetch(client, alice, "bob")
    assert response.status_code == 404
    assert response.json()["error"] == "no_keys"


async def test_fetch_of_a_device_without_keys_is_404(client: httpx.AsyncClient) -> None:
    """404 no_keys for an existing device of the user that never uploaded."""
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone)
    response = await fetch(client, alice, "bob", laptop["device_id"])
    assert response.status_code == 404
    assert response.json()["error"] == "no_keys"


async def test_fetch_without_a_token_is_refused(client: httpx.AsyncClient) -> None:
    """401, and no prekey is consumed."""
    bob = await account(client, "bob")
    await uploaded(client, bob, 2)
    assert (await client.get("/api/keys/bob")).status_code == 401
    assert (await count(client, bob))["one_time_prekeys"] == 2


async def test_count_is_a_reserved_username(client: httpx.AsyncClient) -> None:
    """No user can be named count, so /api/keys/count never shadows a user's bundles."""
    response = await client.post("/api/accounts", json={"username": "count", "password": "x" * 12})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_username"


async def test_concurrent_fetches_never_share_a_prekey(relay_with: RelayFactory) -> None:
    """30 simultaneous fetches of 5 prekeys: each key handed out once, the other 25 get null."""
    _, client = await relay_with(**UNLIMITED)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob, 5)
    handed: list[int | None] = []

    async def one() -> None:
        bundle = await fetch_one(client, alice, bob)
        otk = bundle["one_time_prekey"]
        handed.append(None if otk is None else otk["key_id"])

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
    assert len(handed) == 30
    assert sorted(k for k in handed if k is not None) == [1, 2, 3, 4, 5]
    assert handed.count(None) == 25


async def test_fetched_bundles_are_counted_in_metrics(client: httpx.AsyncClient) -> None:
    """relay_keys_bundles_fetched_total grows by one per bundle handed out."""
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone)
    await uploaded(client, laptop)
    await fetch(client, alice, "bob")
    await fetch(client, alice, "bob", phone["device_id"])
    metrics = (await client.get("/metrics")).text
    assert "relay_keys_bundles_fetched_total 3.0" in metrics


# -- rate limits ------------------------------------------------------------


def assert_rate_limited(response: httpx.Response, at_most: int) -> None:
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= at_most


async def test_fetches_are_rate_limited_per_requesting_device(relay_with: RelayFactory) -> None:
    """Over keys.fetch_rate_per_minute: 429 + Retry-After, no prekey consumed, others unaffected."""
    _, client = await relay_with(keys__fetch_rate_per_minute=2)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    carol = await account(client, "carol")
    await uploaded(client, bob, 5)
    for _ in range(2):
        assert (await fetch(client, alice, "bob")).status_code == 200
    assert_rate_limited(await fetch(client, alice, "bob"), at_most=30)
    assert (await count(client, bob))["one_time_prekeys"] == 3
    assert (await fetch(client, carol, "bob")).status_code == 200


async def test_fetches_are_rate_limited_per_requesting_user(relay_with: RelayFactory) -> None:
    """Over keys.fetch_rate_per_user_per_minute, a user's devices together get 429: more
    devices buy no more fetches (and drain no more prekeys)."""
    _, client = await relay_with(keys__fetch_rate_per_user_per_minute=3)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    carol = await account(client, "carol")
    phone = await device(client, alice, "phone")
    await uploaded(client, bob, 5)
    for fetcher in (alice, phone, alice):
        assert (await fetch(client, fetcher, "bob")).status_code == 200
    assert_rate_limited(await fetch(client, phone, "bob"), at_most=30)
    assert (await count(client, bob))["one_time_prekeys"] == 2
    assert (await fetch(client, carol, "bob")).status_code == 200


async def test_fetches_are_rate_limited_per_target(relay_with: RelayFactory) -> None:
    """Over keys.target_fetch_rate_per_minute for one target, any requester gets 429."""
    _, client = await relay_with(keys__target_fetch_rate_per_minute=2)
    bob, dave = await account(client, "bob"), await account(client, "dave")
    alice, carol = await account(client, "alice"), await account(client, "carol")
    await uploaded(client, bob, 5)
    await uploaded(client, dave, 5)
    for fetcher in (alice, carol):
        assert (await fetch(client, fetcher, "bob")).status_code == 200
    assert_rate_limited(await fetch(client, carol, "BOB"), at_most=30)
    assert (await count(client, bob))["one_time_prekeys"] == 3
    assert (await fetch(client, carol, "dave")).status_code == 200


async def test_target_limit_keys_each_device_fetch_apart(relay_with: RelayFactory) -> None:
    """The by-device route has its own target bucket per device, apart from the by-user one."""
    _, client = await relay_with(keys__target_fetch_rate_per_minute=1)
    phone, alice = await account(client, "bob"), await account(client, "alice")
    laptop = await device(client, phone, "laptop")
    await uploaded(client, phone)
    await uploaded(client, laptop)
    assert (await fetch(client, alice, "bob")).status_code == 200
    assert (await fetch(client, alice, "bob", phone["device_id"])).status_code == 200
    assert_rate_limited(await fetch(client, alice, "bob", phone["device_id"]), at_most=60)
    assert (await fetch(client, alice, "bob", laptop["device_id"])).status_code == 200


# -- low water --------------------------------------------------------------


async def test_fetch_below_low_water_of_an_offline_device_succeeds(
    relay_with: RelayFactory,
) -> None:
    """Crossing low water with nobody connected to notify is still a plain 200."""
    _, client = await relay_with(keys__low_water=3)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob, 3)
    for _ in range(4):
        assert (await fetch(client, alice, "bob")).status_code == 200
    assert (await count(client, bob))["one_time_prekeys"] == 0


async def next_frame(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


def ws_url(relay: Relay) -> str:
    return f"ws://127.0.0.1:{relay.bound.ws_port}/ws"


def ws_auth(grant: Grant) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {grant['access_token']}".encode())]


async def test_prekeys_low_is_pushed_once_a_fetch_goes_below_low_water(
    relay_with: RelayFactory,
) -> None:
    """With low_water 3 and 5 prekeys, the third fetch (2 left) pushes prekeys_low count 2."""
    relay, client = await relay_with(keys__low_water=3, **UNLIMITED)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    await uploaded(client, bob, 5)
    headers = ws_auth(bob)
    async with trio_websocket.open_websocket_url(ws_url(relay), extra_headers=headers) as ws:
        assert (await next_frame(ws))["type"] == "ready"
        for _ in range(3):  # 4 left, 3 left: not below the mark; then 2 left
            await fetch_one(client, alice, bob)
        assert await next_frame(ws) == {"type": "prekeys_low", "count": 2}


async def test_prekeys_low_is_not_repeated_by_fetches_that_find_none(
    relay_with: RelayFactory,
) -> None:
    """Every fetch that takes a key below the mark notifies; one that finds none does not."""
    relay, client = await relay_with(keys__low_water=3, **UNLIMITED)
    bob, alice = await account(client, "bob"), await account(client, "alice")
    _, keys = await uploaded(client, bob, 2)
    headers = ws_auth(bob)
    async with trio_websocket.open_websocket_url(ws_url(relay), extra_headers=headers) as ws:
        assert (await next_frame(ws))["type"] == "ready"
        for _ in range(3):  # 1 left, 0 left, then an empty fetch
            await fetch_one(client, alice, bob)
        await uploaded(client, bob, 2, first_key_id=10, identity=keys.identity)
        await fetch_one(client, alice, bob)  # 1 left
        counts = [(await next_frame(ws))["count"] for _ in range(3)]
        assert counts == [1, 0, 1]


# -- logs -------------------------------------------------------------------


async def test_no_key_material_is_logged(client: httpx.AsyncClient, logs: LogCapture) -> None:
    """Neither uploaded keys and signatures nor refused ones appear in any log line."""
    bob, alice = await account(client, "bob"), await account(client, "alice")
    body, keys = await uploaded(client, bob, 3)
    refused = _resign(
        make_device_keys(2, first_key_id=10, identity=keys.identity)[0], keys.identity, b"x"
    )
    await put(client, bob, refused)
    await fetch(client, alice, "bob")
    await count(client, bob)
    values = [b["identity_key"] for b in (body, refused)] + [
        v
        for b in (body, refused)
        for v in (
            b["signed_prekey"]["public_key"],
            b["signed_prekey"]["signature"],
            *(k["public_key"] for k in b["one_time_prekeys"]),
        )
    ]
    text = logs.getvalue()
    assert "keys.uploaded" in logs.events() and "keys.fetched" in logs.events()
    assert [v for v in values if v in text] == []
