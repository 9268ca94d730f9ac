"""The established pair that watches a flood: alice and bob ping-pong through the relay.

Two throw-away accounts (``flood-<hex>``, registered and logged in over the
HTTP API) each hold one WebSocket, opened *before* the flood starts (so
the handshake gate's bucket never refuses them). alice sends ping *n* to
bob at a fixed rate; bob acks it and sends pong *n* back; alice acks the
pong and records the round trip: send of the ping to arrival of the pong,
two trips through the relay, each stored durably before it is delivered.

:meth:`Pair.figures` reports the round trips of the pings sent within a
window. A ping still unanswered counts as infinitely late, so a pair that
stops hearing back shows an infinite p99 rather than a flattering one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ._accounts import Account, SetupTally, open_accounts
from ._common import FloodError, ws_session
from ._stats import percentile
from ._target import Endpoint

READY_TIMEOUT = 10.0

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class PairFigures:
    """Round trips of the pings sent in one window (milliseconds)."""

    pings: int
    answered: int
    p50_ms: float | None
    p99_ms: float | None
    """math.inf when more than 1% of the pings went unanswered."""
    max_ms: float | None
    """Of the answered pings."""

    @property
    def unanswered(self) -> int:
        return self.pings - self.answered

    def to_json(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None or math.isinf(value) else round(value, 3)

        return {
            "pings": self.pings,
            "answered": self.answered,
            "unanswered": self.unanswered,
            "p50_ms": ms(self.p50_ms),
            "p99_ms": ms(self.p99_ms),
            "p99_infinite": self.p99_ms is not None and math.isinf(self.p99_ms),
            "max_ms": ms(self.max_ms),
        }


def round_trip_figures(sent: list[float], answered: list[float]) -> PairFigures:
    """Figures of *sent* pings, of which *answered* round trips (seconds) came back.

    Unanswered pings rank above every answered one (infinitely late).
    """
    ordered = sorted(answered) + [math.inf] * (len(sent) - len(answered))

    def ms(q: float) -> float | None:
        value = percentile(ordered, q)
        return None if value is None else value * 1000

    return PairFigures(
        pings=len(sent),
        answered=len(answered),
        p50_ms=ms(50),
        p99_ms=ms(99),
        max_ms=max(answered) * 1000 if answered else None,
    )


@dataclass(slots=True)
class Pair:
    """The pair's running record: when each ping left, and each round trip."""

    rate: float
    sent_at: list[float] = field(default_factory=list)
    """Ping n left at ``sent_at[n]`` (trio clock)."""
    round_trip: dict[int, float] = field(default_factory=dict)
    refusals: Counter[str] = field(default_factory=Counter)
    """Error frames the relay answered a ping or pong with, by code."""
    disconnects: Counter[str] = field(default_factory=Counter)
    setup: SetupTally = field(default_factory=SetupTally)
    closing: bool = False

    def figures(self, since: float, until: float) -> PairFigures:
        """The round trips of pings sent in ``[since, until)`` (trio clock)."""
        sent = [n for n, at in enumerate(self.sent_at) if since <= at < until]
        answered = [self.round_trip[n] for n in sent if n in self.round_trip]
        return round_trip_figures([self.sent_at[n] for n in sent], answered)

    def settled(self, until: float) -> bool:
        """Every ping sent before *until* has come back."""
        return all(n in self.round_trip for n, at in enumerate(self.sent_at) if at < until)

    def note_close(self, exc: ConnectionClosed) -> None:
        if not self.closing:
            code = exc.reason.code if exc.reason is not None else None
            self.disconnects[str(code)] += 1


def _frame(data: str | bytes) -> dict[str, Any]:
    try:
        frame = _decode(data)
    except msgspec.DecodeError:
        return {}
    return frame if isinstance(frame, dict) else {}


async def _ready(ws: WebSocketConnection) -> bool:
    try:
        with trio.fail_after(READY_TIMEOUT):
            return _frame(await ws.get_message()).get("type") == "ready"
    except (trio.TooSlowError, ConnectionClosed):
        return False


async def _send(ws: WebSocketConnection, frame: dict[str, Any]) -> None:
    await ws.send_message(_encode(frame).decode())


class _Session:
    def __init__(self, pair: Pair, alice: Account, bob: Account) -> None:
        self.pair = pair
        self.alice = alice
        self.bob = bob
        self.ready = 0
        self.both_ready = trio.Event()
        self.stop = trio.Event()

    def _is_ready(self) -> None:
        self.ready += 1
        if self.ready == 2:
            self.both_ready.set()

    async def bob_body(self, ws: WebSocketConnection) -> None:
        if not await _ready(ws):
            return
        self._is_ready()
        try:
            while True:
                frame = _frame(await ws.get_message())
                kind = frame.get("type")
                if kind == "error":
                    self.pair.refusals[str(frame.get("code"))] += 1
                if kind != "message" or not isinstance(frame.get("id"), str):
                    continue
                body = frame.get("body")
                await _send(ws, {"type": "ack", "id": frame["id"]})
                if isinstance(body, dict) and isinstance(body.get("ping"), int):
                    n = body["ping"]
                    pong = {"type": "send", "id": f"pong-{n}", "to": self.alice.username}
                    await _send(ws, pong | {"body": {"pong": n}})
        except ConnectionClosed as exc:
            self.pair.note_close(exc)

    async def alice_body(self, ws: WebSocketConnection) -> None:
        if not await _ready(ws):
            return
        self._is_ready()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._alice_reads, ws)
            await self.both_ready.wait()
            await self._alice_pings(ws)
            nursery.cancel_scope.cancel()

    async def _alice_pings(self, ws: WebSocketConnection) -> None:
        pair = self.pair
        start = trio.current_time()
        while not self.stop.is_set():
            n = len(pair.sent_at)
            await trio.sleep_until(start + n / pair.rate)
            pair.sent_at.append(trio.current_time())
            frame = {"type": "send", "id": f"ping-{n}", "to": self.bob.username}
            try:
                await _send(ws, frame | {"body": {"ping": n}})
            except ConnectionClosed as exc:
                pair.note_close(exc)
                await self.stop.wait()

    async def _alice_reads(self, ws: WebSocketConnection) -> None:
        pair = self.pair
        try:
            while True:
                frame = _frame(await ws.get_message())
                kind = frame.get("type")
                if kind == "error":
                    pair.refusals[str(frame.get("code"))] += 1
                if kind != "message" or not isinstance(frame.get("id"), str):
                    continue
                now = trio.current_time()
                body = frame.get("body")
                await _send(ws, {"type": "ack", "id": frame["id"]})
                if isinstance(body, dict) and isinstance(body.get("pong"), int):
                    n = body["pong"]
                    if 0 <= n < len(pair.sent_at) and n not in pair.round_trip:
                        pair.round_trip[n] = now - pair.sent_at[n]
        except ConnectionClosed as exc:
            pair.note_close(exc)

    async def hold(self, account: Account, ws_url: Endpoint, alice: bool) -> None:
        async def body(ws: WebSocketConnection) -> None:
            run = self.alice_body if alice else self.bob_body
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, ws)
                await self.stop.wait()
                nursery.cancel_scope.cancel()

        failure = await ws_session(
            ws_url, body, token=account.token, local_address=account.source, queue_size=64
        )
        if failure is not None:
            self.pair.disconnects[f"handshake:{failure.kind}"] += 1


@asynccontextmanager
async def open_pair(
    http: Endpoint,
    ws: Endpoint,
    *,
    rate: float,
    source: str | None,
    setup_timeout: float = 60.0,
) -> AsyncIterator[Pair]:
    """Set up alice and bob, connect both, start the pings; yield the :class:`Pair`.

    Raises :class:`~relay.flood._common.FloodError` if the accounts or the
    two WebSockets are not ready within *setup_timeout* seconds. Leaving
    the block stops the pings and closes both sockets (at most ~2 s).
    """
    if not rate > 0:
        raise ValueError("the pair's rate must be positive")
    pair = Pair(rate)
    accounts = await open_accounts(
        http, 2, sources=(source,) if source else (), tally=pair.setup, timeout=setup_timeout
    )
    if len(accounts) < 2:
        failures = dict(pair.setup.failures) or "timeout"
        raise FloodError(f"could not set up the measuring pair (alice, bob): {failures}")
    session = _Session(pair, accounts[0], accounts[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.hold, accounts[0], ws, True)
        nursery.start_soon(session.hold, accounts[1], ws, False)
        with trio.move_on_after(setup_timeout + READY_TIMEOUT):
            await session.both_ready.wait()
        if not session.both_ready.is_set():
            session.stop.set()
            raise FloodError(
                f"the measuring pair could not connect to {ws.url()}: {dict(pair.disconnects)}"
            )
        try:
            yield pair
        finally:
            pair.closing = True
            session.stop.set()
