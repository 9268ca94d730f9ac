"""``relay flood idle``: open N authenticated WebSockets, hold them, count survivors.

Accounts: the relay caps connections per user (``ws.max_connections_per_user``,
64 by default) and each login costs an argon2 hash, so the run logs in
``ceil(N / per_user_cap)`` accounts with one device each, and spreads the N
connections over them round-robin (each account gets at most the cap).

Ramp: at most ``concurrency`` handshakes at a time; a 429 is waited out
(its ``Retry-After``) and retried until ``ramp_timeout``; a connection is
established when its ``ready`` frame arrives. Hold: once every connection
is established or has failed, the run holds them ``hold`` seconds, reading
(and answering the relay's pings) but sending nothing; connections the
relay closes meanwhile are counted with their close code and lifetime.
Source addresses rotate round-robin; with more than 20,000 connections to
an IPv4 loopback target and no ``source_ips``, 127.0.0.1, .2, ... are used
(one per 20,000) so the ephemeral ports do not run out.
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

from ._accounts import SetupTally, open_accounts
from ._common import check_seconds, params_json, preflight
from ._host import raise_fd_limit
from ._opener import HandshakeDone, Opener
from ._report import live_progress, pairs_table
from ._stats import Latencies
from ._target import Endpoint, auto_sources, check_target, pick

READY_TIMEOUT = 10.0
FD_MARGIN = 256


@dataclass(frozen=True, slots=True)
class IdleOptions:
    """One idle run. Raises ValueError (or UnsafeTarget) when unusable."""

    http: Endpoint
    ws: Endpoint
    connections: int = 100
    hold: float = 10.0
    per_user_cap: int = 64
    concurrency: int = 100
    """Handshakes in flight at once during the ramp."""
    ramp_timeout: float = 60.0
    source_ips: tuple[str, ...] = ()
    setup_timeout: float = 120.0
    allow_remote: bool = False

    def __post_init__(self) -> None:
        for endpoint in (self.http, self.ws):
            check_target(endpoint.host, allow_remote=self.allow_remote)
        for name in ("hold", "ramp_timeout", "setup_timeout"):
            check_seconds(name, getattr(self, name))
        if not 1 <= self.connections <= 1_000_000:
            raise ValueError("connections must be 1-1000000")
        if self.per_user_cap < 1 or self.concurrency < 1:
            raise ValueError("per-user-cap and concurrency must be at least 1")

    @property
    def accounts(self) -> int:
        return math.ceil(self.connections / self.per_user_cap)

    def sources(self) -> tuple[str, ...]:
        """The explicit source addresses, else the automatic ones (may be empty)."""
        return self.source_ips or auto_sources(self.connections, self.ws.host)

    def params(self) -> dict[str, Any]:
        return params_json(
            {
                "http": self.http.url(),
                "ws": self.ws.url(),
                "connections": self.connections,
                "hold_s": self.hold,
                "per_user_cap": self.per_user_cap,
                "accounts": self.accounts,
                "concurrency": self.concurrency,
                "ramp_timeout_s": self.ramp_timeout,
                "source_ips": list(self.sources()),
            }
        )


@dataclass(slots=True)
class IdleResult:
    """The figures of one idle run."""

    options: IdleOptions
    setup: SetupTally = field(default_factory=SetupTally)
    established: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retried_429: int = 0
    ramp_time: float = 0.0
    survived: int = 0
    held_for: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    """Established connections the relay closed before the end, by close code."""
    dropped_lifetimes: Latencies = field(default_factory=Latencies)
    fd_limit: int = 0

    def to_json(self) -> dict[str, Any]:
        lifetimes = self.dropped_lifetimes.summary()
        return {
            "setup": self.setup.to_json(),
            "wanted": self.options.connections,
            "established": self.established,
            "failures": dict(self.failures),
            "retried_429": self.retried_429,
            "ramp_s": round(self.ramp_time, 3),
            "held_for_s": round(self.held_for, 3),
            "survived": self.survived,
            "dropped": dict(self.dropped),
            "dropped_lifetime_s": {
                "min": None if lifetimes.min_ms is None else round(lifetimes.min_ms / 1e3, 3),
                "p50": None if lifetimes.p50_ms is None else round(lifetimes.p50_ms / 1e3, 3),
            },
            "fd_limit": self.fd_limit,
        }

    def tables(self) -> list[Table]:
        o, s = self.options, self.setup
        rows: list[tuple[str, Any]] = [
            ("connections wanted", o.connections),
            ("established", self.established),
            ("failed", sum(self.failures.values())),
            ("429s waited out", self.retried_429),
            ("ramp (s)", round(self.ramp_time, 2)),
            ("held for (s)", round(self.held_for, 2)),
            ("survived the hold", self.survived),
            ("dropped", sum(self.dropped.values())),
            ("accounts ready / wanted", f"{s.logged_in} / {s.wanted}"),
            ("login 429s waited out", f"{s.login_rate_limited} ({s.waited_s:.1f} s)"),
        ]
        for label, counter in (
            ("failures by kind", self.failures),
            ("dropped by close code", self.dropped),
            ("setup failures", s.failures),
        ):
            if counter:
                rows.append((label, dict(counter)))
        if 0 <= self.fd_limit < o.connections + FD_MARGIN:  # -1: unlimited
            rows.append(("open-file limit (too low: EMFILE ahead)", self.fd_limit))
        lifetimes = self.dropped_lifetimes.summary()
        if lifetimes.count:
            rows.append(("dropped: shortest life (s)", round((lifetimes.min_ms or 0) / 1e3, 2)))
        return [pairs_table(f"idle connections to {o.ws.url()}", rows)]


_decode = msgspec.json.Decoder().decode


class _Run:
    def __init__(self, options: IdleOptions) -> None:
        self.options = options
        self.result = IdleResult(options)
        self.phase = "setup"
        self.started = trio.current_time()
        self.hold_started = 0.0
        self.open = 0
        self.reported = 0
        self.all_reported = trio.Event()
        self.opener = Opener(options.ws, options.concurrency)
        self.holding: set[trio.CancelScope] = set()

    def progress_line(self) -> str:
        r, now = self.result, trio.current_time()
        if self.phase == "setup":
            return (
                f"idle setup  accounts {r.setup.logged_in}/{r.setup.wanted}  "
                f"login 429s {r.setup.login_rate_limited}"
            )
        clock = (
            f"{now - self.hold_started:5.1f}/{self.options.hold:g}s" if self.phase == "hold" else ""
        )
        return (
            f"idle {self.phase} {clock}  open {self.open:,}/{self.options.connections:,}  "
            f"failed {sum(r.failures.values()):,}  429 retries {self.opener.retried_429:,}  "
            f"dropped {sum(r.dropped.values()):,}"
        )

    def _report(self) -> None:
        self.reported += 1
        if self.reported >= self.options.connections:
            self.all_reported.set()

    async def hold_one(self, token: str, source: str | None, deadline: float) -> None:
        """Establish one connection (429s waited out until *deadline*), then hold it."""
        result = self.result

        async def body(ws: WebSocketConnection, done: HandshakeDone) -> None:
            try:
                with trio.fail_after(READY_TIMEOUT):
                    first = _decode(await ws.get_message())
            except (trio.TooSlowError, ConnectionClosed, msgspec.DecodeError):
                first = None
            done()
            self._report()
            if not isinstance(first, dict) or first.get("type") != "ready":
                result.failures["no_ready"] += 1
                return
            result.established += 1
            self.open += 1
            born = trio.current_time()
            # Ended by the run through this scope (not by cancelling the
            # session), so the reader still runs for a clean close handshake.
            with trio.CancelScope() as holding:
                self.holding.add(holding)
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason is not None else None
                    result.dropped[str(code)] += 1
                    result.dropped_lifetimes.add(trio.current_time() - born)
                finally:
                    self.open -= 1
                    self.holding.discard(holding)

        failure = await self.opener.open(body, token=token, source=source, deadline=deadline)
        if failure is not None:
            result.failures[failure.kind] += 1
            self._report()

    async def go(self, tokens: list[tuple[str, str | None]]) -> None:
        options, result = self.options, self.result
        if not tokens:
            result.failures["no_account"] += options.connections
            return
        sources = options.sources()
        self.phase = "ramp"
        ramp_started = trio.current_time()
        deadline = ramp_started + options.ramp_timeout
        async with trio.open_nursery() as nursery:
            for i in range(options.connections):
                token, account_source = tokens[i % len(tokens)]
                source = pick(sources, i) if sources else account_source
                nursery.start_soon(self.hold_one, token, source, deadline)
            await self.all_reported.wait()
            result.ramp_time = trio.current_time() - ramp_started
            result.retried_429 = self.opener.retried_429
            self.phase, self.hold_started = "hold", trio.current_time()
            await trio.sleep(options.hold)
            result.held_for = trio.current_time() - self.hold_started
            result.survived = self.open
            self.phase = "closing"
            for holding in tuple(self.holding):
                holding.cancel()


async def run_idle(options: IdleOptions, *, console: Console | None = None) -> IdleResult:
    """Open, hold and close ``options.connections`` idle WebSockets.

    Guarantees: the call returns within about setup_timeout + ramp_timeout
    + 10 s + hold + 2 s (close); every connection it opened is closed (with
    1000) before it returns. Refusals and drops are figures in the result,
    never raised. Raises UnsafeTarget or TargetUnreachable before any
    account is created.
    """
    sources = options.sources()
    await preflight(
        ws=options.ws,
        http=options.http,
        allow_remote=options.allow_remote,
        source=pick(sources, 0),
    )
    run = _Run(options)
    run.result.fd_limit = raise_fd_limit(options.connections + FD_MARGIN)
    async with live_progress(console, run.progress_line):
        accounts = await open_accounts(
            options.http,
            options.accounts,
            sources=sources,
            tally=run.result.setup,
            timeout=options.setup_timeout,
        )
        await run.go([(a.token, a.source) for a in accounts])
    return run.result
