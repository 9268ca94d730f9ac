"""A handshake generator process: ``python -m relay.flood._worker CONN SHARED INDEX NICE``.

Started by :class:`relay.flood._fleet.Fleet`, never by hand. It imports only
:mod:`relay.flood._raw` and the standard library (so it starts in a few
tens of milliseconds), then serves plans until told to stop:

* *CONN_FD*: a socket; :class:`~multiprocessing.connection.Connection`
  messages (pickles): a :class:`~relay.flood._raw.RawPlan` in, its
  :class:`~relay.flood._raw.RawTally` out; ``None`` or end of file: exit.
* *SHARED_FD*: a file shared with the fleet, as int64 slots: slot 0 is the
  stop flag (non-zero: end the current plan now), then
  :data:`~relay.flood._raw.LIVE_SLOTS` live counters per worker; this one
  writes block *INDEX*.
* *NICE*: added to the process's niceness first (``os.nice``), so that the
  coordinator (and the ramp's measuring pair) and, on a shared core, the
  server under test are scheduled before the generator.

SIGINT is ignored: on Ctrl-C the fleet sets the stop flag and ends it.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection

from ._host import raise_fd_limit
from ._raw import LIVE_SLOTS, run_raw

FD_MARGIN = 64
"""Open files a generator process needs besides its sockets."""
SLOT_BYTES = 8


def shared_size(procs: int) -> int:
    """Bytes of the shared file for *procs* workers: the stop flag and their counters."""
    return SLOT_BYTES * (1 + procs * LIVE_SLOTS)


class SharedStop:
    """The stop flag in slot 0 of the shared file."""

    def __init__(self, slots: memoryview) -> None:
        self._slots = slots

    def is_set(self) -> bool:
        return bool(self._slots[0])


def serve(conn: Connection, slots: memoryview, index: int) -> None:
    """Run each plan *conn* sends; send back its tally; return on None or end of file."""
    stop = SharedStop(slots)
    live = slots[1 + index * LIVE_SLOTS : 1 + (index + 1) * LIVE_SLOTS]
    while True:
        try:
            plan = conn.recv()
        except (EOFError, OSError):
            return
        if plan is None:
            return
        raise_fd_limit(plan.max_in_flight + FD_MARGIN)
        conn.send(run_raw(plan, live=live, stop=stop))


def main(argv: Sequence[str]) -> int:
    """Serve plans over the descriptors named by *argv*; 2 for a bad command line."""
    if len(argv) != 4 or not all(arg.isdigit() for arg in argv):
        print("usage: python -m relay.flood._worker CONN SHARED INDEX NICE", file=sys.stderr)
        print("(started by relay flood handshake; not meant to be run by hand)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn_fd, shared_fd, index, nice = (int(arg) for arg in argv)
    if nice:
        os.nice(nice)
    with mmap.mmap(shared_fd, 0) as shared:
        slots = memoryview(shared).cast("q")
        try:
            serve(Connection(conn_fd), slots, index)
        finally:
            slots.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
