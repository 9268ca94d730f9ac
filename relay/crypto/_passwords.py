"""argon2id password hashing, off the event loop and capped.

Hashing costs tens of milliseconds of CPU and 64 MiB of memory per call at
the default cost, so a login flood must not be able to run many at once:
every hash runs in a worker thread under a :class:`trio.CapacityLimiter`.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash
import trio

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


class PasswordHasher:
    """Hashes and verifies passwords with argon2id (PyNaCl).

    At most *concurrency* hashes run at once; further callers wait their turn
    (cancelling a waiting caller is safe: it never started). A hash that has
    started runs to completion even if its caller is cancelled, since a
    thread cannot be interrupted; the limiter slot is held until it ends.

    New hashes (registrations, password changes) may take at most
    ``concurrency - 1`` of the slots, so that with ``concurrency >= 2`` a
    flood of registrations never stops logins from being verified.
    """

    def __init__(self, *, opslimit: int, memlimit: int, concurrency: int) -> None:
        self._opslimit = opslimit
        self._memlimit = memlimit
        self._limiter = trio.CapacityLimiter(concurrency)
        self._new_hashes = trio.CapacityLimiter(max(1, concurrency - 1))
        # Verified against for unknown usernames, so that "no such user"
        # takes as long as "wrong password" and reveals nothing.
        self._dummy: bytes | None = None

    def _hash_sync(self, password: str) -> bytes:
        return nacl.pwhash.argon2id.str(
            password.encode("utf-8"), opslimit=self._opslimit, memlimit=self._memlimit
        )

    def _verify_sync(self, stored: bytes, password: str) -> bool:
        try:
            return bool(nacl.pwhash.verify(stored, password.encode("utf-8")))
        except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError):
            return False

    async def hash(self, password: str) -> bytes:
        """Return the argon2id hash string (self-describing, salted) of *password*."""
        async with self._new_hashes:
            return await trio.to_thread.run_sync(self._hash_sync, password, limiter=self._limiter)

    async def verify(self, stored: bytes | None, password: str) -> bool:
        """True if *password* matches *stored*.

        With *stored* None (unknown user) a dummy hash of the same cost is
        checked, so the answer takes the same time, and False is returned.
        """
        if stored is None:
            if self._dummy is None:
                self._dummy = await trio.to_thread.run_sync(
                    self._hash_sync, "relay-dummy-password", limiter=self._limiter
                )
            target = self._dummy
        else:
            target = stored
        matched = await trio.to_thread.run_sync(
            self._verify_sync, target, password, limiter=self._limiter
        )
        return matched and stored is not None
