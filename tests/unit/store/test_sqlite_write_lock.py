"""Relay processes sharing one SQLite file: how a writer waits for another's lock.

Another process is a second ``sqlite3`` connection to the same file. Real
time and real threads: the waiting happens in SQLite's lock and a worker
thread, where a MockClock cannot reach.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import trio

from relay.store import StoreUnavailable, open_sqlite_store

HOLD = 0.29
"""Seconds the other process holds the lock. The writer starts 20 ms after it;
SQLite's own busy handler would try 228 and 328 ms after that first try, so
left to it the writer gets the lock ~58 ms after the release (measured: 3.1
ms for a hold of 50 ms, 48.8 ms for 300 ms)."""


def hold_write_lock(path: Path, seconds: float, released: list[float]) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    time.sleep(seconds)
    other.execute("COMMIT")
    released.append(time.monotonic())
    other.close()


async def test_a_writer_gets_the_lock_within_milliseconds_of_its_release(
    tmp_path: Path,
) -> None:
    """Two relay processes on one file take turns promptly, instead of one starving."""
    path = tmp_path / "relay.db"
    async with open_sqlite_store(str(path)) as store, trio.open_nursery() as nursery:
        released: list[float] = []
        nursery.start_soon(trio.to_thread.run_sync, hold_write_lock, path, HOLD, released)
        await trio.sleep(0.02)  # the other process has the lock
        await store.create_user("alice", b"hash", 1.0)
        written = time.monotonic()
        assert [u.username for u in await store.list_users()] == ["alice"]  # once
    assert released, "the other process never released its lock"
    assert written - released[0] < 0.03


async def test_a_lock_held_past_busy_timeout_fails_the_write(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    async with open_sqlite_store(str(path), busy_timeout=0.1) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.create_user("alice", b"hash", 1.0)
            assert 0.1 <= time.monotonic() - started < 1.0
        finally:
            other.execute("ROLLBACK")
            other.close()
