"""``relay flood handshake``: open WebSocket handshakes as fast as asked, count the answers.

Each attempt is a raw HTTP upgrade over a fresh TCP connection: connect,
send the request, read only the status line, then (after a 101) send a
masked close frame and hang up. Latency is from the start of the TCP
connect to the status line. With a rate, attempts are started on a fixed
schedule (attempt *k* at ``start + k / rate``), so a slow answer never
makes the schedule drift; at most ``concurrency`` are in flight, and an
attempt that had to wait for a slot is counted as late.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ._common import TargetUnreachable, check_seconds, error_kind, params_json, preflight
from ._report import fmt_rate, latency_cells, live_progress, pairs_table, table
from ._stats import HANDSHAKE_OUTCOMES, OutcomeTally, handshake_outcome, rate
from ._target import Endpoint, check_target, pick
from ._wire import (
    BAD_TOKEN,
    open_stream,
    read_status_line,
    resolve,
    say_goodbye,
    status_of,
    upgrade_request,
)

LATE_AFTER = 0.010
ANSWERED_ERRORS = ("closed_before_status", "bad_response")
"""Errors that still prove something is listening."""
"""An opener that starts this many seconds after its slot counts as late."""


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    """One handshake run. Raises ValueError (or UnsafeTarget) when unusable."""

    ws: Endpoint
    rate: float | None = None
    """Attempts per second; None: as fast as *concurrency* allows."""
    concurrency: int = 50
    duration: float = 10.0
    count: int | None = None
    token: str | None = field(default=None, repr=False)
    bad_token: bool = False
    origin: str | None = None
    source_ips: tuple[str, ...] = ()
    timeout: float = 5.0
    """Per attempt: TCP connect through the status line."""
    allow_remote: bool = False

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
            }
        )


@dataclass(slots=True)
class HandshakeResult:
    """The figures of one handshake run."""

    options: HandshakeOptions
    tally: OutcomeTally = field(default_factory=lambda: OutcomeTally(HANDSHAKE_OUTCOMES))
    other_statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    late_starts: int = 0
    max_lag: float = 0.0

    @property
    def attempts(self) -> int:
        return self.tally.total

    def to_json(self) -> dict[str, Any]:
        rates = self.tally.rates(self.elapsed)
        return {
            "elapsed_s": round(self.elapsed, 3),
            "attempts": self.attempts,
            "attempts_per_s": round(rate(self.attempts, self.elapsed), 3),
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
        if self.options.rate is not None:
            notes.append(("late starts (no free slot)", self.late_starts))
        result = [table(title, columns, rows)]
        if notes:
            result.append(pairs_table("details", notes))
        return result


class _Run:
    def __init__(self, options: HandshakeOptions) -> None:
        self.options = options
        self.result = HandshakeResult(options)
        self.token = BAD_TOKEN if options.bad_token else options.token
        self.started = trio.current_time()
        self.stop_at = self.started + options.duration
        self.issued = 0
        self.address = options.ws.host

    def progress_line(self) -> str:
        elapsed = trio.current_time() - self.started
        counts = self.result.tally.counts()
        shown = "  ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        speed = rate(self.result.attempts, elapsed)
        return (
            f"handshake {min(elapsed, self.options.duration):5.1f}/{self.options.duration:g}s  "
            f"attempts {self.result.attempts:,} ({speed:,.0f}/s)  {shown}"
        )

    def claim(self) -> int | None:
        """The next attempt's number, or None once the count or time is used up."""
        count = self.options.count
        if (count is not None and self.issued >= count) or trio.current_time() >= self.stop_at:
            return None
        self.issued += 1
        return self.issued - 1

    async def closed_loop(self) -> None:
        async def worker() -> None:
            while (i := self.claim()) is not None:
                await self.attempt(i)

        async with trio.open_nursery() as nursery:
            for _ in range(self.options.concurrency):
                nursery.start_soon(worker)

    async def open_loop(self, per_second: float) -> None:
        slots = trio.Semaphore(self.options.concurrency)

        async def attempt(i: int) -> None:
            try:
                await self.attempt(i)
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            while True:
                at = self.started + self.issued / per_second
                if at >= self.stop_at or self.claim() is None:
                    break
                await trio.sleep_until(at)
                await slots.acquire()
                lag = trio.current_time() - at
                self.result.max_lag = max(self.result.max_lag, lag)
                if lag > LATE_AFTER:
                    self.result.late_starts += 1
                nursery.start_soon(attempt, self.issued - 1)

    async def attempt(self, i: int) -> tuple[str, str | None]:
        """Make attempt *i*; record and return its outcome (and error kind, if any)."""
        options, result = self.options, self.result
        ws = options.ws
        request = upgrade_request(ws, token=self.token, origin=options.origin, key=os.urandom(16))
        start = trio.current_time()
        status: int | None = None
        latency = 0.0
        error: str | None = None
        try:
            with trio.fail_after(options.timeout):
                stream = await open_stream(
                    self.address, ws.port, local_address=pick(options.source_ips, i)
                )
                async with stream:
                    await stream.send_all(request)
                    line = await read_status_line(stream)
                    latency = trio.current_time() - start
                    status = status_of(line)
                    if status == 101:
                        await say_goodbye(stream)
        except trio.TooSlowError:
            if status is None:
                result.tally.add("timeout")
                return "timeout", None
        except EOFError:
            error = "closed_before_status"
        except ValueError:
            error = "bad_response"
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = error_kind(exc)
        if status is None:
            error = error or "unknown"
            result.errors[error] += 1
            result.tally.add("error")
            return "error", error
        outcome = handshake_outcome(status)
        if outcome == "other":
            result.other_statuses[status] += 1
        result.tally.add(outcome, latency)
        return outcome, None


async def run_handshake(
    options: HandshakeOptions, *, console: Console | None = None
) -> HandshakeResult:
    """Run a handshake flood; returns when the duration or count is used up.

    Guarantees: no attempt starts after ``options.duration`` seconds, none
    beyond ``options.count``, and each ends within ``options.timeout``; so
    the call returns within about duration + timeout. Refusals are counted,
    never raised. Raises UnsafeTarget before any connection if the target is
    not allowed, and TargetUnreachable if the first attempt (made alone, and
    counted) gets no HTTP answer at all.
    """
    await preflight(
        ws=options.ws,
        http=None,
        allow_remote=options.allow_remote,
        source=pick(options.source_ips, 0),
        probe_ws=False,
    )
    run = _Run(options)
    try:
        run.address = await resolve(options.ws.host, options.ws.port)
    except OSError as exc:
        raise TargetUnreachable(f"cannot resolve {options.ws.host!r}: {exc}") from None
    first = run.claim()
    assert first is not None
    outcome, error = await run.attempt(first)
    if outcome == "timeout" or error not in (None, *ANSWERED_ERRORS):
        reason = error or f"no answer within {options.timeout:g} s"
        raise TargetUnreachable(f"{options.ws.url()} is unreachable: {reason}")
    async with live_progress(console, run.progress_line):
        if options.rate is None:
            await run.closed_loop()
        else:
            await run.open_loop(options.rate)
    run.result.elapsed = trio.current_time() - run.started
    return run.result
