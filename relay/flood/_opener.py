"""Opening many WebSockets politely: a cap on handshakes in flight, and 429 pacing.

The relay limits handshakes per source IP with a token bucket. Retrying
every refused handshake after its ``Retry-After`` from many tasks at once
would only produce a storm of 429s, so once a source address has been
refused its handshakes go one at a time, each after the source's
``Retry-After`` has passed: the ramp then follows the bucket's refill rate
with about one 429 per refill interval. Other sources are unaffected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from trio_websocket import WebSocketConnection

from ._common import WsFailure, ws_session
from ._target import Endpoint

HandshakeDone = Callable[[], None]
OpenBody = Callable[[WebSocketConnection, HandshakeDone], Awaitable[None]]
DEFAULT_RETRY = 1.0
HANDSHAKE_TIMEOUT = 10.0


class Opener:
    """Opens WebSockets to one endpoint; counts the 429s it waited out."""

    def __init__(self, ws: Endpoint, concurrency: int) -> None:
        self._ws = ws
        self._slots = trio.Semaphore(concurrency)
        self._locks: dict[str | None, trio.Semaphore] = {}
        self._until: dict[str | None, float] = {}
        self.retried_429 = 0

    async def open(
        self,
        body: OpenBody,
        *,
        token: str | None,
        source: str | None,
        deadline: float,
        queue_size: int = 1,
    ) -> WsFailure | None:
        """Open one WebSocket and run ``body(ws, done)``; retry 429s until *deadline*.

        *body* must call ``done()`` once the handshake is over for its
        purposes (say, when the first frame is in): that frees the slot for
        the next handshake. Returns None once a handshake succeeded (after
        *body* returned), else the last failure: ``ramp_timeout`` when the
        deadline came first.
        """
        while True:
            turn = _Turn(self._slots, self._locks, source)
            await turn.take(lambda: min(self._until.get(source, 0.0), deadline))
            left = deadline - trio.current_time()
            if left <= 0:
                turn.done()
                return WsFailure("ramp_timeout")

            async def run_body(ws: WebSocketConnection, turn: _Turn = turn) -> None:
                await body(ws, turn.done)

            try:
                failure = await ws_session(
                    self._ws,
                    run_body,
                    token=token,
                    local_address=source,
                    handshake_timeout=min(HANDSHAKE_TIMEOUT, left),
                    queue_size=queue_size,
                )
            finally:
                turn.done()
            if failure is None or failure.kind != "429":
                return failure
            wait = failure.retry_after or DEFAULT_RETRY
            self._until[source] = max(self._until.get(source, 0.0), trio.current_time() + wait)
            self._locks.setdefault(source, trio.Semaphore(1))
            if trio.current_time() + wait >= deadline:
                return failure
            self.retried_429 += 1


class _Turn:
    """One handshake's right to go: a slot, and the source's pacing token if paced."""

    def __init__(
        self, slots: trio.Semaphore, paced: dict[str | None, trio.Semaphore], source: str | None
    ) -> None:
        self._slots = slots
        self._pacing = paced
        self._source = source
        self._paced: trio.Semaphore | None = None
        self._held = False

    async def take(self, not_before: Callable[[], float]) -> None:
        """Wait for the source's turn (if it is paced), until ``not_before()``, for a slot.

        A source that becomes paced while this waited for a slot is waited
        for again, paced: no handshake of a paced source bypasses its turn.
        """
        while True:
            self._paced = self._pacing.get(self._source)
            if self._paced is not None:
                await self._paced.acquire()
            try:
                await trio.sleep_until(not_before())
                await self._slots.acquire()
            except BaseException:
                if self._paced is not None:
                    self._paced.release()
                raise
            if self._paced is None and self._source in self._pacing:
                self._slots.release()
                continue
            self._held = True
            return

    def done(self) -> None:
        """Give the slot (and pacing token) back; idempotent."""
        if self._held:
            self._held = False
            self._slots.release()
            if self._paced is not None:
                self._paced.release()
