"""``relay flood handshake``: open WebSocket handshakes as fast as asked, count the answers.

Each attempt is a raw HTTP upgrade over a fresh TCP connection (see
:mod:`relay.flood._raw`): connect, send the request, read only the status
line, then (after a 101) send a masked close frame and hang up. Latency is
from the socket's creation to the status line. The attempts are made by
``procs`` generator processes (:mod:`relay.flood._fleet`) sharing one
schedule: with a rate, attempt *k* starts at ``start + k / rate`` whatever
the answers did (open loop), at most ``concurrency`` in flight in all; an
attempt that starts more than 10 ms late is counted as late.

The result says what the generator itself managed: the rate it was asked
for, the rate it started attempts at, and each process's CPU use, so a
reader can tell a saturated generator from a saturated relay.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ._common import TargetUnreachable, check_seconds, params_json, preflight
from ._fleet import Fleet
from ._host import core_busy, core_times, generator_cores
from ._raw import ANSWERED_ERRORS, RawPlan, RawTally, run_raw
from ._report import fmt_rate, latency_cells, live_progress, pairs_table, table
from ._stats import HANDSHAKE_OUTCOMES, OutcomeTally, rate
from ._target import Endpoint, check_target, pick, resolve
from ._wire import BAD_TOKEN, upgrade_request

REQUEST_POOL = 64
"""Distinct upgrade requests (Sec-WebSocket-Key values) each process cycles through."""
SATURATED = 0.90
"""A generator process using this share of a core or more is the likely limit."""
CORE_FULL = 0.95
"""A core this busy (softirq included) has nothing left to give."""


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    """One handshake run. Raises ValueError (or UnsafeTarget) when unusable."""

    ws: Endpoint
    rate: float | None = None
    """Attempts per second in all; None: as fast as *concurrency* allows (closed loop)."""
    concurrency: int = 200
    """Attempts in flight at most, over all processes."""
    duration: float = 10.0
    count: int | None = None
    token: str | None = field(default=None, repr=False)
    bad_token: bool = False
    origin: str | None = None
    source_ips: tuple[str, ...] = ()
    timeout: float = 5.0
    """Per attempt: socket creation through the status line."""
    allow_remote: bool = False
    procs: int = 1
    """Generator processes."""
    in_process: bool = False
    """Run the one generator in a thread of this process (tests; needs procs = 1)."""
    nice: int = 10
    """Niceness added to the generator processes (0-19): they yield to this process and,
    on a shared core, to the server under test."""

    def __post_init__(self) -> None:
        check_target(self.ws.host, allow_remote=self.allow_remote)
        check_seconds("duration", self.duration)
        check_seconds("timeout", self.timeout)
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.token is not None and self.bad_token:
            raise ValueError("give a token or ask for a bad one, not both")
        if not 1 <= self.procs <= 64:
            raise ValueError("procs must be 1-64")
        if self.in_process and self.procs != 1:
            raise ValueError("in_process needs procs = 1")
        if not 0 <= self.nice <= 19:
            raise ValueError("nice must be 0-19")
        if self.ws.scheme != "ws":
            raise ValueError("handshakes need a ws:// endpoint")

    @property
    def token_kind(self) -> str:
        return "bad" if self.bad_token else ("given" if self.token else "none")

    def params(self) -> dict[str, Any]:
        return params_json(
            {
                "ws": self.ws.url(),
                "rate": self.rate,
                "concurrency": self.concurrency,
                "duration_s": self.duration,
                "count": self.count,
                "token": self.token_kind,
                "origin": self.origin,
                "source_ips": list(self.source_ips),
                "timeout_s": self.timeout,
                "procs": self.procs,
                "nice": self.nice,
            }
        )

    def requests(self) -> tuple[bytes, ...]:
        """The upgrade requests to cycle through, each with its own random key."""
        token = BAD_TOKEN if self.bad_token else self.token
        return tuple(
            upgrade_request(self.ws, token=token, origin=self.origin, key=os.urandom(16))
            for _ in range(REQUEST_POOL)
        )

    def in_flight_caps(self) -> list[int]:
        """Each process's share of *concurrency* (at least 1 each)."""
        n = self.procs
        return [max(1, self.concurrency // n + (i < self.concurrency % n)) for i in range(n)]

    def plans(self, address: str, *, first_done: bool) -> list[RawPlan]:
        """One plan per process; attempt 0 is left out when *first_done*."""
        requests = self.requests()
        n = self.procs
        caps = self.in_flight_caps()
        return [
            RawPlan(
                address=address,
                port=self.ws.port,
                requests=requests,
                sources=self.source_ips,
                rate=self.rate,
                max_in_flight=caps[i],
                duration=self.duration,
                count=self.count,
                timeout=self.timeout,
                offset=i,
                stride=n,
                first=1 if (first_done and i == 0) else 0,
            )
            for i in range(n)
        ]


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """What one generator process did and what it cost."""

    started: int
    cpu_s: float
    wall_s: float
    max_in_flight: int

    @property
    def cpu_share(self) -> float:
        """Its CPU time over its wall time: the share of one core it used."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "cpu_share": round(self.cpu_share, 3),
            "max_in_flight": self.max_in_flight,
        }


@dataclass(slots=True)
class HandshakeResult:
    """The figures of one handshake run (or of one ramp step)."""

    options: HandshakeOptions
    tally: OutcomeTally = field(default_factory=lambda: OutcomeTally(HANDSHAKE_OUTCOMES))
    other_statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    """From the common start until the last attempt ended."""
    start_window: float = 0.0
    """From the common start until the last attempt was started (or the duration)."""
    late_starts: int = 0
    max_lag: float = 0.0
    workers: list[WorkerFigures] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)
    """Every core's busy share during the run (``/proc/stat``, softirq included)."""
    generator_cores: tuple[str, ...] = ()
    """The cores the generator processes could run on (``cpu0``…)."""

    @property
    def attempts(self) -> int:
        return self.tally.total

    @property
    def started_per_s(self) -> float:
        """Attempts started per second: what the generator actually offered."""
        return rate(self.attempts, self.start_window)

    @property
    def unclean(self) -> int:
        """Attempts without an HTTP answer: timeouts and errors (resets, refusals…)."""
        return self.tally["timeout"] + self.tally["error"]

    def add(self, raw: RawTally) -> None:
        """Count one process's (or the first attempt's) figures in."""
        for name in HANDSHAKE_OUTCOMES:
            self.tally.add_many(name, raw.counts.get(name, 0), raw.latencies.get(name, ()))
        self.other_statuses.update(raw.other_statuses)
        self.errors.update(raw.errors)
        self.late_starts += raw.late_starts
        self.max_lag = max(self.max_lag, raw.max_lag)

    def saturated_workers(self) -> int:
        return sum(1 for w in self.workers if w.cpu_share >= SATURATED)

    def full_generator_cores(self) -> list[str]:
        """The generator's cores that were at least 95% busy (all of them, or none)."""
        busy = [self.cores.get(name, 0.0) for name in self.generator_cores]
        if busy and min(busy) >= CORE_FULL:
            return list(self.generator_cores)
        return []

    def generator_verdict(self) -> str:
        """One line: whether the generator kept up, and if not, what held it back."""
        asked = self.options.rate
        short = asked is not None and self.started_per_s < 0.95 * asked
        limited = short or asked is None
        busy = self.saturated_workers()
        if busy and limited:
            return f"generator-bound ({busy}/{len(self.workers)} processes ≥90% busy)"
        full = self.full_generator_cores()
        if full and limited:
            return f"generator's cores full ({'+'.join(full)} ≥95% busy, softirq included)"
        capped = bool(self.workers) and all(
            w.max_in_flight >= plan_cap
            for w, plan_cap in zip(self.workers, self.options.in_flight_caps(), strict=False)
        )
        if short:
            return "short: in-flight cap reached" if capped else "short of the asked rate"
        if asked is not None:
            return "kept up"
        return "closed loop: in-flight cap set the pace" if capped else "closed loop"

    def to_json(self) -> dict[str, Any]:
        rates = self.tally.rates(self.elapsed)
        return {
            "elapsed_s": round(self.elapsed, 3),
            "attempts": self.attempts,
            "attempts_per_s": round(rate(self.attempts, self.elapsed), 3),
            "asked_per_s": self.options.rate,
            "started_per_s": round(self.started_per_s, 3),
            "outcomes": {
                name: {
                    "count": count,
                    "per_s": round(rates[name], 3),
                    "latency_ms": self.tally.latencies(name).to_json(),
                }
                for name, count in self.tally.counts().items()
            },
            "latency_ms": self.tally.latencies().to_json(),
            "other_statuses": {str(k): v for k, v in sorted(self.other_statuses.items())},
            "errors": dict(self.errors),
            "schedule": {
                "late_starts": self.late_starts,
                "max_lag_ms": round(self.max_lag * 1e3, 3),
            },
            "generator": {
                "procs": len(self.workers),
                "workers": [w.to_json() for w in self.workers],
                "cores": list(self.generator_cores),
                "verdict": self.generator_verdict(),
            },
            "cores_busy": {k: round(v, 3) for k, v in sorted(self.cores.items())},
        }

    def tables(self) -> list[Table]:
        total = self.attempts
        rows = []
        for name, count in self.tally.counts().items():
            share = f"{100 * count / total:.1f}" if total else "-"
            per_s = fmt_rate(rate(count, self.elapsed))
            latency = latency_cells(self.tally.latencies(name))
            rows.append([name, f"{count:,}", per_s, share, *latency])
        all_per_s = fmt_rate(rate(total, self.elapsed))
        rows.append(
            ["all", f"{total:,}", all_per_s, "100.0", *latency_cells(self.tally.latencies())]
        )
        columns = ["outcome", "count", "per s", "%", "p50 ms", "p95 ms", "p99 ms", "max ms"]
        title = f"handshakes to {self.options.ws.url()} over {self.elapsed:.2f} s"
        notes: list[tuple[str, object]] = []
        if self.other_statuses:
            notes.append(("other statuses", dict(sorted(self.other_statuses.items()))))
        if self.errors:
            notes.append(("errors", dict(self.errors)))
        return [table(title, columns, rows), *self._generator_tables(notes)]

    def _generator_tables(self, notes: list[tuple[str, object]]) -> list[Table]:
        options = self.options
        asked = f"{options.rate:,.0f}/s" if options.rate is not None else "max (closed loop)"
        shares = ", ".join(f"{100 * w.cpu_share:.0f}%" for w in self.workers)
        notes += [
            ("asked", asked),
            ("started", f"{self.started_per_s:,.0f}/s"),
            ("in flight at most", f"{options.concurrency:,}"),
            ("late starts (>10 ms), worst", f"{self.late_starts:,} ({self.max_lag * 1e3:.0f} ms)"),
            ("processes, CPU of a core each", f"{len(self.workers)}: {shares or '-'}"),
            ("cores busy (softirq included)", _cores_cell(self.cores, self.generator_cores)),
            ("verdict", self.generator_verdict()),
        ]
        return [pairs_table("generator", notes)]


def _cores_cell(cores: dict[str, float], mine: tuple[str, ...]) -> str:
    if not cores:
        return "-"
    return ", ".join(
        f"{name} {100 * share:.0f}%" + (" (generator's)" if name in mine else "")
        for name, share in sorted(cores.items())
    )


def _figures(raw: RawTally) -> WorkerFigures:
    return WorkerFigures(
        started=raw.started,
        cpu_s=raw.cpu_s,
        wall_s=max(0.0, raw.ended_at - raw.start_at),
        max_in_flight=raw.max_in_flight_seen,
    )


def collect(
    options: HandshakeOptions, tallies: list[RawTally], result: HandshakeResult
) -> HandshakeResult:
    """Fold one round's per-process tallies into *result* (spans from their common start)."""
    for raw in tallies:
        result.add(raw)
        result.workers.append(_figures(raw))
    start = min((raw.start_at for raw in tallies if raw.start_at), default=0.0)
    end = max((raw.ended_at for raw in tallies), default=start)
    last = max((raw.last_start for raw in tallies), default=start)
    result.elapsed = max(0.0, end - start)
    count_reached = options.count is not None and result.attempts >= options.count
    result.start_window = max(0.0, last - start) if count_reached else options.duration
    return result


async def first_attempt(options: HandshakeOptions, address: str) -> RawTally:
    """Attempt 0, alone: raises TargetUnreachable unless it gets some HTTP answer."""
    plan = RawPlan(
        address=address,
        port=options.ws.port,
        requests=options.requests()[:1],
        sources=options.source_ips,
        max_in_flight=1,
        duration=options.timeout,
        count=1,
        timeout=options.timeout,
    )
    raw = await trio.to_thread.run_sync(run_raw, plan)
    if raw.counts["timeout"] or (raw.errors and not set(raw.errors) <= set(ANSWERED_ERRORS)):
        reason = next(iter(raw.errors), None) or f"no answer within {options.timeout:g} s"
        raise TargetUnreachable(f"{options.ws.url()} is unreachable: {reason}")
    return raw


async def target_address(options: HandshakeOptions) -> str:
    """The IP literal to connect to; TargetUnreachable if the name does not resolve."""
    await preflight(
        ws=options.ws,
        http=None,
        allow_remote=options.allow_remote,
        source=pick(options.source_ips, 0),
        probe_ws=False,
    )
    try:
        address = await resolve(options.ws.host, options.ws.port)
    except OSError as exc:
        raise TargetUnreachable(f"cannot resolve {options.ws.host!r}: {exc}") from None
    if options.source_ips and (":" in address) != (":" in options.source_ips[0]):
        raise ValueError(f"source addresses and the target {address} are not the same IP family")
    return address


async def run_handshake(
    options: HandshakeOptions, *, console: Console | None = None
) -> HandshakeResult:
    """Run a handshake flood; returns when the duration or count is used up.

    Guarantees: no attempt starts after ``options.duration`` seconds, none
    beyond ``options.count``, and each ends within ``options.timeout``; so
    the call returns within about duration + timeout (plus the generator
    processes' start, a fraction of a second). Refusals are counted, never
    raised. Raises UnsafeTarget before any connection if the target is not
    allowed, and TargetUnreachable if the first attempt (made alone, and
    counted) gets no HTTP answer at all. Cancelling the call stops the
    generator processes.
    """
    address = await target_address(options)
    first = await first_attempt(options, address)
    result = HandshakeResult(options)
    result.add(first)
    with Fleet(options.procs, in_process=options.in_process, nice=options.nice) as fleet:
        started = trio.current_time()

        def progress_line() -> str:
            live = fleet.live_counts()
            elapsed = max(0.0, trio.current_time() - started)
            counts = zip(HANDSHAKE_OUTCOMES, live[1:], strict=True)
            shown = "  ".join(f"{k} {v:,}" for k, v in counts if v)
            return (
                f"handshake {min(elapsed, options.duration):5.1f}/{options.duration:g}s  "
                f"attempts {live[0]:,} ({rate(live[0], elapsed):,.0f}/s)  {shown}"
            )

        async with live_progress(console, progress_line):
            before = core_times()
            tallies = await fleet.run(options.plans(address, first_done=True))
            result.cores = core_busy(before, core_times())
    result.generator_cores = generator_cores()
    return collect(options, tallies, result)
