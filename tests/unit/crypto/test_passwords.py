"""argon2id hashing: correct verification, unknown users, and the concurrency cap."""

from __future__ import annotations

import threading
import time

import trio

from relay.crypto import PasswordHasher


def cheap(concurrency: int = 2) -> PasswordHasher:
    return PasswordHasher(opslimit=1, memlimit=8192, concurrency=concurrency)


async def test_right_password_verifies() -> None:
    """A hash verifies against the password it was made from."""
    hasher = cheap()
    stored = await hasher.hash("correct horse")
    assert stored.startswith(b"$argon2id$")
    assert await hasher.verify(stored, "correct horse")


async def test_wrong_password_does_not_verify() -> None:
    """Any other password is refused."""
    hasher = cheap()
    assert not await hasher.verify(await hasher.hash("correct horse"), "correct horsf")


async def test_unknown_user_never_verifies() -> None:
    """verify(None, ...) checks a dummy hash and answers False."""
    hasher = cheap()
    assert not await hasher.verify(None, "relay-dummy-password")


async def test_same_password_hashes_differently() -> None:
    """Hashes are salted."""
    hasher = cheap()
    assert await hasher.hash("same password") != await hasher.hash("same password")


async def test_corrupt_stored_hash_does_not_verify() -> None:
    """A damaged stored hash is a mismatch, not a crash."""
    assert not await cheap().verify(b"$argon2id$garbage", "whatever1")


async def test_hashing_never_exceeds_the_concurrency_cap(monkeypatch: object) -> None:
    """With a cap of 2, at most two hashes run at once however many are asked for."""
    hasher = cheap(concurrency=2)
    running = 0
    peak = 0
    lock = threading.Lock()
    original = hasher._hash_sync

    def slow_hash(password: str) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        try:
            return original(password)
        finally:
            with lock:
                running -= 1

    hasher._hash_sync = slow_hash  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(hasher.hash, f"password-{i}")
    assert peak == 2
