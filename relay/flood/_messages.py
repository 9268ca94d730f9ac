"""``relay flood messages``: pairs of devices exchange messages; every id is checked.

Setup: ``2 * pairs`` throw-away accounts (one device each) are registered
and logged in over the HTTP API, and each opens one WebSocket. In pair *i*
the first device sends to the second at ``rate / pairs`` messages per
second, on a fixed schedule (pairs are phase-shifted to spread the load);
the second acks what it receives (batched, up to 256 ids an ack frame).

Each send carries ``{"fid": N, "t": T}`` as its body: N is unique within
the run (it is also the frame's client id) and T the send time on the
flood's monotonic clock, so the receiver measures send → delivered itself.
After the sending window the run drains: it waits (at most ``drain``
seconds) until every message is answered and every accepted one delivered.
Then each id is checked: lost (accepted, never delivered), duplicated
(delivered twice or more), unconfirmed (delivered, never accepted).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from rich.console import Console
from rich.table import Table
from trio_websocket import ConnectionClosed, WebSocketConnection

from ._accounts import Account, SetupTally, open_accounts
from ._common import check_seconds, params_json, preflight
from ._opener import HandshakeDone, Opener
from ._report import fmt_rate, latency_cells, live_progress, pairs_table, table
from ._stats import MessageLedger, rate
from ._target import Endpoint, check_target, pick

READY_TIMEOUT = 10.0
CONNECT_CONCURRENCY = 50
MAX_ACK_IDS = 256
LATE_AFTER = 0.010


@dataclass(frozen=True, slots=True)
class MessagesOptions:
    """One messages run. Raises ValueError (or UnsafeTarget) when unusable."""

    http: Endpoint
    ws: Endpoint
    pairs: int = 2
    rate: float = 100.0
    """Messages per second, all pairs together."""
    duration: float = 10.0
    count: int | None = None
    """Stop after this many messages in all (None: the duration decides)."""
    drain: float = 5.0
    source_ips: tuple[str, ...] = ()
    setup_timeout: float = 120.0
    allow_remote: bool = False

    def __post_init__(self) -> None:
        for endpoint in (self.http, self.ws):
            check_target(endpoint.host, allow_remote=self.allow_remote)
        for name in ("duration", "drain", "setup_timeout"):
            check_seconds(name, getattr(self, name))
        if not 1 <= self.pairs <= 1000:
            raise ValueError("pairs must be 1-1000")
        if not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")

    def params(self) -> dict[str, Any]:
        return params_json(
            {
                "http": self.http.url(),
                "ws": self.ws.url(),
                "pairs": self.pairs,
                "rate": self.rate,
                "duration_s": self.duration,
                "count": self.count,
                "drain_s": self.drain,
                "source_ips": list(self.source_ips),
            }
        )


@dataclass(slots=True)
class MessagesResult:
    """The figures of one messages run."""

    options: MessagesOptions
    setup: SetupTally = field(default_factory=SetupTally)
    ledger: MessageLedger = field(default_factory=MessageLedger)
    connected: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    connect_retried_429: int = 0
    active_pairs: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    send_window: float = 0.0
    drain_time: float = 0.0
    late_sends: int = 0
    max_lag: float = 0.0

    def to_json(self) -> dict[str, Any]:
        figures = self.ledger.result()
        window = self.send_window
        return {
            "setup": self.setup.to_json(),
            "connections": {
                "wanted": 2 * self.options.pairs,
                "connected": self.connected,
                "failures": dict(self.connect_failures),
                "retried_429": self.connect_retried_429,
            },
            "active_pairs": self.active_pairs,
            "send_window_s": round(window, 3),
            "drain_s": round(self.drain_time, 3),
            "messages": figures.to_json(),
            "per_s": {
                "sent": round(rate(figures.sent, window), 3),
                "accepted": round(rate(figures.accepted, window), 3),
                "delivered": round(rate(figures.delivered, window), 3),
            },
            "latency_ms": {
                "send_to_accepted": self.ledger.accept_latency.summary().to_json(),
                "send_to_delivered": self.ledger.delivery_latency.summary().to_json(),
            },
            "refusals": dict(self.refusals),
            "disconnects": dict(self.disconnects),
            "schedule": {"late_sends": self.late_sends, "max_lag_ms": round(self.max_lag * 1e3, 3)},
        }

    def tables(self) -> list[Table]:
        f, window = self.ledger.result(), self.send_window
        counted = [
            ("sent", f.sent),
            ("accepted", f.accepted),
            ("refused", f.refused),
            ("unanswered", f.unanswered),
            ("delivered", f.delivered),
            ("lost", f.lost),
            ("duplicated", f.duplicated),
            ("unconfirmed", f.unconfirmed),
        ]
        rows = [(name, f"{n:,}", fmt_rate(rate(n, window))) for name, n in counted]
        title = (
            f"messages: {self.active_pairs} pairs, {window:.2f} s sending "
            f"(+{self.drain_time:.2f} s drain)"
        )
        latency_rows = [
            ("send → accepted", *latency_cells(self.ledger.accept_latency.summary())),
            ("send → delivered", *latency_cells(self.ledger.delivery_latency.summary())),
        ]
        setup = self.setup
        notes: list[tuple[str, Any]] = [
            ("accounts ready / wanted", f"{setup.logged_in} / {setup.wanted}"),
            ("login 429s waited out", f"{setup.login_rate_limited} ({setup.waited_s:.1f} s)"),
            ("websockets connected", f"{self.connected} / {2 * self.options.pairs}"),
            ("handshake 429s waited out", self.connect_retried_429),
            ("sends late (>10 ms), worst", f"{self.late_sends} ({self.max_lag * 1e3:.0f} ms)"),
        ]
        for label, counter in (
            ("setup failures", setup.failures),
            ("connect failures", self.connect_failures),
            ("refusals (error frames)", self.refusals),
            ("disconnects (close codes)", self.disconnects),
        ):
            if counter:
                notes.append((label, dict(counter)))
        return [
            table(title, ["", "count", "per s"], rows),
            table("latency", ["", "p50 ms", "p95 ms", "p99 ms", "max ms"], latency_rows),
            pairs_table("setup and schedule", notes),
        ]


_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class _Run:
    def __init__(self, options: MessagesOptions) -> None:
        self.options = options
        self.result = MessagesResult(options)
        self.ledger = self.result.ledger
        self.phase = "setup"
        self.started = trio.current_time()
        self.send_started = 0.0
        self.reported = 0
        self.all_reported = trio.Event()
        self.go = trio.Event()
        self.stop = trio.Event()
        self.senders_left = 0
        self.senders_done = trio.Event()
        self.wanted = 0
        self.joined: set[str] = set()
        self.active: list[bool] = []
        self.opener = Opener(options.ws, CONNECT_CONCURRENCY)
        self.connect_deadline = 0.0

    def progress_line(self) -> str:
        ledger, now = self.ledger, trio.current_time()
        if self.phase == "setup":
            s = self.result.setup
            return (
                f"messages setup  accounts {s.logged_in}/{s.wanted}  "
                f"login 429s {s.login_rate_limited}"
            )
        window = (now - self.send_started) if self.phase == "send" else self.result.send_window
        speed = rate(ledger.accepted, window)
        return (
            f"messages {self.phase} {window:5.1f}/{self.options.duration:g}s  "
            f"sent {ledger.sent:,}  accepted {ledger.accepted:,} ({speed:,.0f}/s)  "
            f"delivered {ledger.delivered:,}  refused {ledger.refused:,}"
        )

    def _report(self, ok: bool) -> None:
        if ok:
            self.result.connected += 1
        self.reported += 1
        if self.reported >= self.wanted:
            self.all_reported.set()

    async def peer(self, index: int, account: Account, peer: Account, sending: bool) -> None:
        """Run one device's connection for the whole run."""
        looping = False

        async def body(ws: WebSocketConnection, done: HandshakeDone) -> None:
            nonlocal looping
            try:
                with trio.fail_after(READY_TIMEOUT):
                    first = _decode(await ws.get_message())
            except (trio.TooSlowError, ConnectionClosed, msgspec.DecodeError):
                first = None
            done()
            if not isinstance(first, dict) or first.get("type") != "ready":
                self.result.connect_failures["no_ready"] += 1
                self._report(False)
                return
            self.joined.add(account.username)
            self._report(True)
            async with trio.open_nursery() as nursery:
                if sending:
                    nursery.start_soon(self._read_answers, ws)
                    looping = True
                    await self._send_loop(ws, index, peer.username)
                else:
                    acks, pending = trio.open_memory_channel[str](math.inf)
                    nursery.start_soon(self._read_messages, ws, acks)
                    nursery.start_soon(_ack_loop, ws, pending)
                await self.stop.wait()
                nursery.cancel_scope.cancel()

        failure = await self.opener.open(
            body,
            token=account.token,
            source=account.source,
            deadline=self.connect_deadline,
            queue_size=64,
        )
        if failure is not None:
            self.result.connect_failures[failure.kind] += 1
            self._report(False)
        if sending and not looping:
            self._sender_finished()

    def _sender_finished(self) -> None:
        self.senders_left -= 1
        if self.senders_left <= 0:
            self.senders_done.set()

    async def _send_loop(self, ws: WebSocketConnection, index: int, to: str) -> None:
        try:
            await self.go.wait()
            if not self.active[index]:
                return
            per_pair = self.options.rate / self.result.active_pairs
            phase = index / self.options.pairs
            stop_at, count, k = self.send_started + self.options.duration, self.options.count, 0
            while True:
                at = self.send_started + (k + phase) / per_pair
                if at >= stop_at or (count is not None and self.ledger.sent >= count):
                    return
                await trio.sleep_until(at)
                if count is not None and self.ledger.sent >= count:
                    return
                now = trio.current_time()
                lag = now - at
                if lag > LATE_AFTER:
                    self.result.late_sends += 1
                    self.result.max_lag = max(self.result.max_lag, lag)
                mid = self.ledger.send(now)
                body = {"fid": mid, "t": now}
                frame = {"type": "send", "id": str(mid), "to": to, "body": body}
                try:
                    await ws.send_message(_encode(frame).decode())
                except ConnectionClosed:
                    return
                k += 1
        finally:
            self._sender_finished()

    async def _read_answers(self, ws: WebSocketConnection) -> None:
        ledger = self.ledger
        try:
            while True:
                frame = _frame(await ws.get_message())
                kind = frame.get("type")
                if kind == "accepted":
                    ledger.accept(_int(frame.get("id")), trio.current_time())
                elif kind == "error":
                    self.result.refusals[str(frame.get("code"))] += 1
                    if frame.get("ref") is not None:
                        ledger.refuse(_int(frame["ref"]))
        except ConnectionClosed as exc:
            self._closed(exc)

    async def _read_messages(
        self, ws: WebSocketConnection, acks: trio.MemorySendChannel[str]
    ) -> None:
        ledger = self.ledger
        try:
            while True:
                frame = _frame(await ws.get_message())
                if frame.get("type") != "message" or not isinstance(frame.get("id"), str):
                    continue
                body = frame.get("body")
                if isinstance(body, dict) and isinstance(body.get("t"), float):
                    ledger.deliver(_int(body.get("fid")), trio.current_time() - body["t"])
                else:
                    ledger.deliver(-1, 0.0)
                acks.send_nowait(str(frame["id"]))
        except ConnectionClosed as exc:
            self._closed(exc)

    def _closed(self, exc: ConnectionClosed) -> None:
        if not self.stop.is_set():
            code = exc.reason.code if exc.reason is not None else None
            self.result.disconnects[str(code)] += 1

    async def go_all(self, accounts: list[Account]) -> None:
        options, result = self.options, self.result
        pairs = [(accounts[2 * i], accounts[2 * i + 1]) for i in range(len(accounts) // 2)]
        self.wanted = 2 * len(pairs)
        self.senders_left = len(pairs)
        self.active = [False] * len(pairs)
        if not pairs:
            return
        self.phase = "connect"
        self.connect_deadline = trio.current_time() + options.setup_timeout
        async with trio.open_nursery() as nursery:
            for i, (sender, receiver) in enumerate(pairs):
                nursery.start_soon(self.peer, i, sender, receiver, True)
                nursery.start_soon(self.peer, i, receiver, sender, False)
            await self.all_reported.wait()
            result.connect_retried_429 = self.opener.retried_429
            self.active = [self._joined(p) for p in pairs]
            result.active_pairs = sum(self.active)
            self.phase, self.send_started = "send", trio.current_time()
            self.go.set()
            if result.active_pairs:
                await self.senders_done.wait()
            result.send_window = trio.current_time() - self.send_started
            self.phase = "drain"
            with trio.move_on_after(options.drain):
                while not self.ledger.settled:
                    await trio.sleep(0.02)
            result.drain_time = trio.current_time() - self.send_started - result.send_window
            self.stop.set()

    def _joined(self, pair: tuple[Account, Account]) -> bool:
        return all(account.username in self.joined for account in pair)


def _frame(data: str | bytes) -> dict[str, Any]:
    """A server frame as a dict; an empty one for anything that is not a JSON object."""
    try:
        frame = _decode(data)
    except msgspec.DecodeError:
        return {}
    return frame if isinstance(frame, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


async def _ack_loop(ws: WebSocketConnection, pending: trio.MemoryReceiveChannel[str]) -> None:
    """Ack received ids, as many per frame as have queued up (at most 256)."""
    try:
        async for first in pending:
            ids = [first]
            while len(ids) < MAX_ACK_IDS:
                try:
                    ids.append(pending.receive_nowait())
                except trio.WouldBlock:
                    break
            await ws.send_message(_encode({"type": "ack", "ids": ids}).decode())
    except ConnectionClosed:
        pass


async def run_messages(
    options: MessagesOptions, *, console: Console | None = None
) -> MessagesResult:
    """Run a messages flood; returns after the sending window and the drain.

    Guarantees: no message is sent after ``options.duration`` seconds of
    sending (nor beyond ``options.count``); the call returns within about
    setup_timeout + 10 s (connect) + duration + drain + 2 s (close).
    Refusals and losses are figures in the result, never raised. Raises
    UnsafeTarget or TargetUnreachable before any account is created.
    """
    await preflight(
        ws=options.ws,
        http=options.http,
        allow_remote=options.allow_remote,
        source=pick(options.source_ips, 0),
    )
    run = _Run(options)
    async with live_progress(console, run.progress_line):
        accounts = await open_accounts(
            options.http,
            2 * options.pairs,
            sources=options.source_ips,
            tally=run.result.setup,
            timeout=options.setup_timeout,
        )
        await run.go_all(accounts)
    return run.result
