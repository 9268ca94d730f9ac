"""Generator processes for the handshake mode: N workers, one plan each per round.

Python makes about ten thousand handshake attempts a second per core, so a
generator that must outrun a server uses several processes. A :class:`Fleet`
starts its workers once (``python -m relay.flood._worker``: a fresh
interpreter that imports only the raw engine and the standard library),
then runs any number of rounds on them (a ramp's steps): it sends each
worker its :class:`~relay.flood._raw.RawPlan`, all with the same
``start_at``, and collects each :class:`~relay.flood._raw.RawTally`. Live
counts and the stop flag live in a small file the fleet and its workers
map in shared memory, so progress is shown without asking the workers.

Workers ignore SIGINT (the fleet stops them), exit when the fleet's end of
their socket closes, and are killed if they do not exit when asked. They
run *nice* steps below this process's priority. With
``in_process=True`` the one worker runs in a thread of this process instead
(cheaper to start, for tests; it shares this process's GIL).
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from types import TracebackType

import trio

from ._common import FloodError
from ._raw import LIVE_SLOTS, RawPlan, RawTally, run_raw
from ._worker import SharedStop, shared_size

START_MARGIN = 0.25
"""Seconds between handing out the plans and their common start."""
EXIT_WAIT = 5.0


class FleetError(FloodError):
    """A generator process died or could not start."""


class Fleet:
    """*procs* generator workers: started on entering, stopped and reaped on leaving."""

    def __init__(self, procs: int, *, in_process: bool = False, nice: int = 0) -> None:
        if procs < 1:
            raise ValueError("procs must be at least 1")
        if not 0 <= nice <= 19:
            raise ValueError("nice must be 0-19")
        if in_process and procs != 1:
            raise ValueError("in_process runs exactly one worker")
        self.procs = procs
        self.in_process = in_process
        self.nice = nice
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (lives until close())
        self._file.truncate(shared_size(procs))
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._slots = memoryview(self._map).cast("q")
        self._workers: list[tuple[subprocess.Popen[bytes], Connection]] = []

    def __enter__(self) -> Fleet:
        if self.in_process:
            return self
        try:
            for index in range(self.procs):
                self._workers.append(self._spawn(index))
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, index: int) -> tuple[subprocess.Popen[bytes], Connection]:
        mine, theirs = socket.socketpair()
        shared = self._file.fileno()
        fds = [str(theirs.fileno()), str(shared), str(index), str(self.nice)]
        try:
            # This interpreter, one of our modules, four numbers: nothing untrusted.
            process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "relay.flood._worker", *fds],
                pass_fds=(theirs.fileno(), shared),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            mine.close()
            raise FleetError(f"cannot start a generator process: {exc}") from None
        finally:
            theirs.close()
        return process, Connection(mine.detach())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop any round, tell the workers to exit, reap them (killing a stuck one)."""
        self.stop()
        for _, conn in self._workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        deadline = time.monotonic() + EXIT_WAIT
        for process, conn in self._workers:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            conn.close()
        self._workers.clear()
        if not self._map.closed:
            self._slots.release()
            self._map.close()
            self._file.close()

    def stop(self) -> None:
        """Ask the round in progress to end now (its tallies still come back)."""
        if not self._map.closed:
            self._slots[0] = 1

    def live_counts(self) -> list[int]:
        """Attempts started, then each outcome's count, summed over the workers, now."""
        totals = [0] * LIVE_SLOTS
        if self._map.closed:
            return totals
        for i, value in enumerate(self._slots[1:]):
            totals[i % LIVE_SLOTS] += value
        return totals

    async def run(self, plans: Sequence[RawPlan]) -> list[RawTally]:
        """Run one plan per worker; their tallies, in worker order.

        The plans' ``start_at`` is replaced by one common time a moment
        from now. Cancelling this call stops the round (within about 10 ms)
        and re-raises. Raises :class:`FleetError` if a worker dies.
        """
        if len(plans) != self.procs:
            raise ValueError(f"{len(plans)} plans for {self.procs} workers")
        for i in range(len(self._slots)):
            self._slots[i] = 0
        start_at = time.monotonic() + START_MARGIN
        ready = [replace(plan, start_at=start_at) for plan in plans]
        try:
            if self.in_process:
                stop, live = SharedStop(self._slots), self._slots[1:]
                tally = await trio.to_thread.run_sync(
                    lambda: run_raw(ready[0], live=live, stop=stop), abandon_on_cancel=True
                )
                return [tally]
            for (_, conn), plan in zip(self._workers, ready, strict=True):
                conn.send(plan)
            return [await self._receive(process, conn) for process, conn in self._workers]
        except BaseException:
            self.stop()
            raise

    @staticmethod
    async def _receive(process: subprocess.Popen[bytes], conn: Connection) -> RawTally:
        try:
            await trio.lowlevel.wait_readable(conn.fileno())
            tally: RawTally = conn.recv()
        except (EOFError, OSError) as exc:
            code = process.poll()
            raise FleetError(f"a generator process died (pid {process.pid}, exit {code})") from exc
        return tally
