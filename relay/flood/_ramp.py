"""``relay flood handshake --ramp A:B:S``: step the flood's rate up until the relay breaks.

An established pair (:mod:`relay.flood._pair`) is connected first and
pings through the relay for the whole ramp. Then, step after step, the
generator offers a fixed rate of handshakes (open loop) for
``step_duration`` seconds: first none at all (the baseline), then A, A+S, …
up to B attempts per second. For each step the ramp records what was
offered and what the generator actually started, the answers (refusals
are 429s), the pair's round-trip p99, and, when given the relay's pid, its
CPU time over the step (``/proc/<pid>/stat``) and every core's busy share
(``/proc/stat``, softirq included).

A step is **broken** when the pair's p99 exceeds ``break_p99_ms``, the pair
loses its connection, or more than ``break_unclean`` of the attempts end
without an HTTP answer (timeouts, resets: the relay stopped refusing
cleanly). The ramp stops at the first broken step (unless ``keep_going``);
that step's rate is the breaking rate. A step where the generator started
less than 95% of the asked rate is marked generator-short: beyond it the
ramp measures the generator, not the relay.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ._common import check_seconds, params_json, preflight
from ._fleet import START_MARGIN, Fleet
from ._handshake import HandshakeOptions, HandshakeResult, collect, target_address
from ._host import core_busy, core_softirq, core_times, generator_cores, process_cpu
from ._pair import Pair, PairFigures, open_pair
from ._report import live_progress, pairs_table, table
from ._stats import rate
from ._target import Endpoint, check_target

MAX_STEPS = 40
MAX_PAIR_RATE = 50.0
"""Pings per second at most: the relay's per-device send bucket is 100/s."""
SHORT_OF_ASKED = 0.95
REFUSALS = ("401", "403", "429", "503")


def ramp_rates(start: float, stop: float, step: float) -> tuple[float, ...]:
    """``start, start + step, …`` up to *stop* inclusive; ValueError if unusable."""
    if not (start > 0 and stop >= start and step > 0):
        raise ValueError("a ramp needs 0 < START <= STOP and STEP > 0")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_STEPS:
        raise ValueError(f"a ramp has at most {MAX_STEPS} steps, not {count}")
    return tuple(start + i * step for i in range(count))


def default_pair_source(target: str, flood_sources: tuple[str, ...]) -> str | None:
    """A loopback source for the pair that the flood does not use (its own bucket).

    127.0.0.254 downward for an IPv4 loopback *target*; None (the kernel's
    choice) otherwise.
    """
    if not target.startswith("127."):
        return None
    used = set(flood_sources)
    return next((f"127.0.0.{i}" for i in range(254, 1, -1) if f"127.0.0.{i}" not in used), None)


@dataclass(frozen=True, slots=True)
class RampOptions:
    """One ramp. Raises ValueError (or UnsafeTarget) when unusable."""

    handshake: HandshakeOptions
    """What each step floods with (its rate, duration and count are the ramp's)."""
    rates: tuple[float, ...]
    step_duration: float = 10.0
    http: Endpoint | None = None
    """The HTTP API, for the pair's accounts; None: no pair."""
    pair_rate: float = 20.0
    pair_source: str | None = None
    """None: :func:`default_pair_source`."""
    server_pid: int | None = None
    """The relay's process id, to read its CPU time (same machine only)."""
    break_p99_ms: float = 50.0
    break_unclean: float = 0.01
    keep_going: bool = False
    settle: float = 2.0
    """After a step, seconds to wait (at most) for the pair's last pongs."""

    def __post_init__(self) -> None:
        check_seconds("step duration", self.step_duration)
        if self.http is not None:
            check_target(self.http.host, allow_remote=self.handshake.allow_remote)
        if not self.rates or len(self.rates) > MAX_STEPS or min(self.rates) <= 0:
            raise ValueError(f"a ramp needs 1-{MAX_STEPS} positive rates")
        if self.handshake.rate is not None or self.handshake.count is not None:
            raise ValueError("a ramp sets each step's rate itself: give no rate and no count")
        if not 0 < self.pair_rate <= MAX_PAIR_RATE:
            raise ValueError(f"the pair's rate must be in (0, {MAX_PAIR_RATE:g}] pings/s")
        if not self.break_p99_ms > 0:
            raise ValueError("the p99 threshold must be positive")
        if not 0 <= self.break_unclean < 1:
            raise ValueError("the unclean share must be in [0, 1)")
        if self.handshake.in_process and self.http is not None:
            raise ValueError("an in-process generator would disturb the pair's timing")

    def params(self) -> dict[str, Any]:
        return params_json(
            {
                "flood": self.handshake.params() | {"rate": None, "duration_s": None},
                "rates": list(self.rates),
                "step_duration_s": self.step_duration,
                "http": self.http.url() if self.http else None,
                "pair_rate": self.pair_rate if self.http else None,
                "server_pid": self.server_pid,
                "break_p99_ms": self.break_p99_ms,
                "break_unclean": self.break_unclean,
                "keep_going": self.keep_going,
            }
        )


@dataclass(slots=True)
class RampStep:
    """One step: what was offered, what came back, what it cost the relay."""

    offered: float
    """Attempts per second asked for (0: the baseline, no flood)."""
    window_s: float
    flood: HandshakeResult | None = None
    pair: PairFigures | None = None
    pair_disconnects: int = 0
    relay_cpu_s: float | None = None
    cores: dict[str, float] = field(default_factory=dict)
    """Every core's busy share over the step (softirq included)."""
    softirq: dict[str, float] = field(default_factory=dict)
    """Every core's share of the step spent in softirq (the kernel's packet work)."""
    broken: list[str] = field(default_factory=list)
    """Why the step is broken (empty: it is not)."""
    generator_short: bool = False

    @property
    def refused(self) -> int:
        """Attempts the relay refused with an HTTP status (429 above all)."""
        return sum(self.flood.tally[name] for name in REFUSALS) if self.flood else 0

    @property
    def refused_per_s(self) -> float:
        """Refusals per second of the step's sending window."""
        return rate(self.refused, self.flood.start_window) if self.flood else 0.0

    @property
    def relay_cpu_share(self) -> float | None:
        if self.relay_cpu_s is None or self.window_s <= 0:
            return None
        return self.relay_cpu_s / self.window_s

    def cpu_per_refused_us(self, baseline_share: float | None) -> tuple[float | None, float | None]:
        """Relay CPU µs per refused attempt: as measured, and net of the baseline's CPU rate."""
        if self.relay_cpu_s is None or not self.refused:
            return None, None
        raw = self.relay_cpu_s / self.refused * 1e6
        if baseline_share is None:
            return raw, None
        net = (self.relay_cpu_s - baseline_share * self.window_s) / self.refused * 1e6
        return raw, net

    def verdict(self) -> str:
        if self.broken:
            return "broken: " + "; ".join(self.broken)
        if self.offered == 0:
            return "baseline"
        return "ok (generator short of the rate)" if self.generator_short else "ok"

    def to_json(self, baseline_share: float | None) -> dict[str, Any]:
        raw, net = self.cpu_per_refused_us(baseline_share)
        flood = self.flood
        workers = flood.workers if flood else []
        return {
            "offered_per_s": self.offered,
            "window_s": round(self.window_s, 3),
            "started_per_s": round(flood.started_per_s, 1) if flood else 0.0,
            "refused": self.refused,
            "refused_per_s": round(self.refused_per_s, 1),
            "unclean": flood.unclean if flood else 0,
            "unclean_share": round(flood.unclean / flood.attempts, 5)
            if flood and flood.attempts
            else 0.0,
            "generator_cpu_share": [round(w.cpu_share, 3) for w in workers],
            "generator_short": self.generator_short,
            "relay_cpu_s": None if self.relay_cpu_s is None else round(self.relay_cpu_s, 3),
            "relay_cpu_share": _round(self.relay_cpu_share, 3),
            "relay_cpu_us_per_refused": _round(raw, 1),
            "relay_cpu_us_per_refused_net": _round(net, 1),
            "cores_busy": {k: round(v, 3) for k, v in sorted(self.cores.items())},
            "cores_softirq": {k: round(v, 3) for k, v in sorted(self.softirq.items())},
            "pair": self.pair.to_json() if self.pair else None,
            "pair_disconnects": self.pair_disconnects,
            "broken": self.broken,
            "verdict": self.verdict(),
            "flood": flood.to_json() if flood else None,
        }


def _short_verdict(step: RampStep) -> str:
    if step.broken:
        return "BROKEN"
    return step.verdict().replace(" of the rate", "")


def _unclean_percent(flood: HandshakeResult | None) -> str:
    if flood is None or not flood.attempts:
        return "-"
    return f"{100 * flood.unclean / flood.attempts:.2f}"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def judge(step: RampStep, options: RampOptions) -> None:
    """Fill in *step*'s ``broken`` reasons and ``generator_short`` flag."""
    pair, flood = step.pair, step.flood
    if pair is not None and pair.p99_ms is not None and pair.p99_ms > options.break_p99_ms:
        if math.isinf(pair.p99_ms):
            step.broken.append(f"pair p99 infinite ({pair.unanswered} pings unanswered)")
        else:
            step.broken.append(f"pair p99 {pair.p99_ms:.1f} ms > {options.break_p99_ms:g} ms")
    if step.pair_disconnects:
        step.broken.append("the pair lost its connection")
    if flood is not None and flood.attempts:
        share = flood.unclean / flood.attempts
        if share > options.break_unclean:
            step.broken.append(
                f"{100 * share:.1f}% of attempts unanswered (timeouts/errors) > "
                f"{100 * options.break_unclean:g}%"
            )
        step.generator_short = flood.started_per_s < SHORT_OF_ASKED * step.offered
    if options.server_pid is not None and step.relay_cpu_s is None:
        step.broken.append("the relay process is gone")


@dataclass(slots=True)
class RampResult:
    """Every step of a ramp, and where it broke."""

    options: RampOptions
    pair_source: str | None = None
    steps: list[RampStep] = field(default_factory=list)

    @property
    def baseline_share(self) -> float | None:
        base = self.steps[0] if self.steps and self.steps[0].offered == 0 else None
        return base.relay_cpu_share if base else None

    @property
    def breaking(self) -> RampStep | None:
        """The first broken flood step."""
        return next((s for s in self.steps if s.broken and s.offered > 0), None)

    @property
    def sustained_breaking(self) -> RampStep | None:
        """The first flood step from which every later step is broken too.

        With ``keep_going`` this tells a lasting break from one noisy step;
        without it, it is the same step as :attr:`breaking`.
        """
        flooded = [s for s in self.steps if s.offered > 0]
        for i, step in enumerate(flooded):
            if all(later.broken for later in flooded[i:]):
                return step
        return None

    def summary(self) -> str:
        """One sentence: where the relay broke, or what bounded the ramp."""
        flooded = [s for s in self.steps if s.offered > 0]
        broken = self.breaking
        if broken is not None:
            started = broken.flood.started_per_s if broken.flood else 0.0
            return (
                f"broke at {broken.offered:,.0f}/s offered ({started:,.0f}/s started): "
                + "; ".join(broken.broken)
            )
        if not flooded:
            return "no flood step ran"
        top = max(s.flood.started_per_s if s.flood else 0.0 for s in flooded)
        if flooded[-1].generator_short:
            return (
                f"did not break; the generator could not offer more than {top:,.0f}/s "
                f"(asked {flooded[-1].offered:,.0f}/s)"
            )
        return f"did not break up to {flooded[-1].offered:,.0f}/s (the end of the ramp)"

    def to_json(self) -> dict[str, Any]:
        broken, sustained = self.breaking, self.sustained_breaking
        return {
            "pair_source": self.pair_source,
            "steps": [s.to_json(self.baseline_share) for s in self.steps],
            "breaking_rate_per_s": broken.offered if broken else None,
            "sustained_breaking_rate_per_s": sustained.offered if sustained else None,
            "summary": self.summary(),
        }

    def tables(self) -> list[Table]:
        rows = []
        for step in self.steps:
            flood = step.flood
            _, net = step.cpu_per_refused_us(self.baseline_share)
            pair = step.pair
            p99 = "-" if pair is None or pair.p99_ms is None else f"{pair.p99_ms:,.1f}"
            share = step.relay_cpu_share
            rows.append(
                [
                    f"{step.offered:,.0f}",
                    f"{flood.started_per_s:,.0f}" if flood else "0",
                    f"{step.refused_per_s:,.0f}",
                    f"{100 * flood.unclean / flood.attempts:.2f}"
                    if flood and flood.attempts
                    else "-",
                    "/".join(f"{100 * w.cpu_share:.0f}" for w in flood.workers) if flood else "-",
                    "-" if share is None else f"{100 * share:.0f}",
                    "-" if net is None else f"{net:,.0f}",
                    p99,
                    _short_verdict(step),
                ]
            )
        columns = [
            "offered/s",
            "started/s",
            "refused/s",
            "unclean %",
            "gen CPU %",
            "relay CPU %",
            "µs/refused",
            "pair p99 ms",
            "verdict",
        ]
        title = f"ramp: {self.options.handshake.ws.url()}, {self.options.step_duration:g} s a step"
        notes = [
            ("result", self.summary()),
            *((f"step {s.offered:,.0f}/s", s.verdict()) for s in self.steps if s.broken),
            ("pair", f"{self.options.pair_rate:g} round trips/s from {self.pair_source or 'any'}")
            if self.options.http
            else ("pair", "none (--no-pair)"),
            ("breaks when", self._criteria()),
            ("µs/refused", "relay CPU per refused attempt, net of the baseline step's CPU rate"),
        ]
        return [table(title, columns, rows), pairs_table("ramp", notes)]

    def _criteria(self) -> str:
        o = self.options
        return (
            f"pair p99 > {o.break_p99_ms:g} ms, or > {100 * o.break_unclean:g}% of attempts "
            "without an HTTP answer"
        )


async def _step(
    options: RampOptions,
    fleet: Fleet,
    address: str,
    pair: Pair | None,
    offered: float,
) -> RampStep:
    pid = options.server_pid
    cpu_before = _cpu(pid)
    cores_before = core_times()
    disconnects_before = sum(pair.disconnects.values()) if pair else 0
    begun = trio.current_time()
    flood: HandshakeResult | None = None
    if offered == 0:
        await trio.sleep(options.step_duration)
        since, until = begun, trio.current_time()
    else:
        hs = replace(options.handshake, rate=offered, duration=options.step_duration)
        tallies = await fleet.run(hs.plans(address, first_done=False))
        flood = collect(hs, tallies, HandshakeResult(hs))
        since = begun + START_MARGIN
        until = since + options.step_duration
    window = trio.current_time() - begun
    cpu_after = _cpu(pid)
    step = RampStep(offered=offered, window_s=window, flood=flood)
    if cpu_before is not None and cpu_after is not None:
        step.relay_cpu_s = cpu_after - cpu_before
    cores_after = core_times()
    step.cores = core_busy(cores_before, cores_after)
    step.softirq = core_softirq(cores_before, cores_after)
    if flood is not None:
        flood.cores, flood.generator_cores = step.cores, generator_cores()
    if pair is not None:
        with trio.move_on_after(options.settle):
            while not pair.settled(until):
                await trio.sleep(0.05)
        step.pair = pair.figures(since, until)
        step.pair_disconnects = sum(pair.disconnects.values()) - disconnects_before
    judge(step, options)
    return step


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return process_cpu(pid)
    except (OSError, ValueError):
        return None


def step_line(step: RampStep, baseline_share: float | None) -> str:
    """One line per finished step, for the live output."""
    flood = step.flood
    started = f"{flood.started_per_s:,.0f}/s started" if flood else "no flood"
    _, net = step.cpu_per_refused_us(baseline_share)
    share = step.relay_cpu_share
    parts = [
        f"step {step.offered:,.0f}/s: {started}, {rate(step.refused, step.window_s):,.0f} refused/s"
    ]
    if share is not None:
        parts.append(f"relay CPU {100 * share:.0f}%")
    if net is not None:
        parts.append(f"{net:,.0f} µs/refused")
    if step.pair is not None and step.pair.p99_ms is not None:
        parts.append(f"pair p99 {step.pair.p99_ms:,.1f} ms")
    return ", ".join(parts) + f": {step.verdict()}"


async def run_ramp(options: RampOptions, *, console: Console | None = None) -> RampResult:
    """Run the baseline and each step in turn; returns after the first broken step.

    Guarantees: each step lasts ``step_duration`` plus at most the
    handshake timeout and ``settle``; there are at most :data:`MAX_STEPS`
    steps, so the call is bounded. Raises UnsafeTarget, TargetUnreachable
    or FloodError (the pair could not be set up) before the first step.
    """
    hs = options.handshake
    address = await target_address(hs)
    pair_source = options.pair_source or default_pair_source(address, hs.source_ips)
    if options.http is not None:
        await preflight(
            ws=hs.ws, http=options.http, allow_remote=hs.allow_remote, source=pair_source
        )
    result = RampResult(options, pair_source)
    current = {"step": "setup"}

    def progress_line() -> str:
        live = fleet.live_counts() if fleet else [0]
        return f"ramp {current['step']}  attempts {live[0]:,}"

    fleet: Fleet | None = None
    async with AsyncExitStack() as stack:
        pair = None
        if options.http is not None:
            pair = await stack.enter_async_context(
                open_pair(options.http, hs.ws, rate=options.pair_rate, source=pair_source)
            )
        fleet = stack.enter_context(Fleet(hs.procs, in_process=hs.in_process, nice=hs.nice))
        async with live_progress(console, progress_line):
            for offered in (0.0, *options.rates):
                current["step"] = f"{offered:,.0f}/s" if offered else "baseline"
                step = await _step(options, fleet, address, pair, offered)
                result.steps.append(step)
                if console is not None:
                    console.print(step_line(step, result.baseline_share), highlight=False)
                if step.broken and step.offered > 0 and not options.keep_going:
                    break
    return result
