"""argon2id hashing: correct verification, unknown users, and the concurrency cap."""

from __future__ import annotations

import threading
import time

import trio
import trio.testing

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


async def test_new_hashes_never_exceed_the_cap_less_one(monkeypatch: object) -> None:
    """With a cap of 3, at most two new hashes run at once however many are asked for."""
    hasher = cheap(concurrency=3)
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


class Blocking(PasswordHasher):
    """Hashes wait for a gate to open, like argon2id on a busy machine."""

    def __init__(self, concurrency: int) -> None:
        super().__init__(opslimit=1, memlimit=8192, concurrency=concurrency)
        self.gate = threading.Event()
        self.started = 0

    def _hash_sync(self, password: str) -> bytes:
        self.started += 1
        self.gate.wait(10)
        return super()._hash_sync(password)


async def test_new_hashes_leave_a_slot_for_logins() -> None:
    """With every new-hash slot busy, a login's verification still runs at once."""
    hasher = Blocking(concurrency=2)
    stored = await trio.to_thread.run_sync(PasswordHasher._hash_sync, hasher, "correct horse")
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(hasher.hash, "a registration")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        with trio.fail_after(5):
            assert await hasher.verify(stored, "correct horse")
        assert hasher.started == 1  # one registration at a time, the other slot kept free
        hasher.gate.set()
