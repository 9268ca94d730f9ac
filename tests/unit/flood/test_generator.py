"""Spec for the handshake generator's pure parts: plans, tallies, verdicts, sources, /proc."""

from __future__ import annotations

from array import array

import pytest

from relay.cli import main
from relay.flood._args import build_parser
from relay.flood._cli import build_options
from relay.flood._handshake import HandshakeOptions, HandshakeResult, WorkerFigures, collect
from relay.flood._host import core_busy, core_softirq, parse_core_times, parse_process_cpu
from relay.flood._ramp import RampOptions
from relay.flood._raw import RawTally
from relay.flood._target import numbered_sources, parse_endpoint
from relay.flood._worker import main as worker_main

WS = parse_endpoint("ws://127.0.0.1:8765/ws", "ws")


def test_numbered_sources_count_from_one() -> None:
    """--sources N means 127.0.0.1 to 127.0.0.N."""
    assert numbered_sources(3) == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert numbered_sources(254)[-1] == "127.0.0.254"


@pytest.mark.parametrize("bad", [0, 255])
def test_numbered_sources_stay_in_one_slash_24(bad: int) -> None:
    """Fewer than one or more than 254 sources is a usage error."""
    with pytest.raises(ValueError):
        numbered_sources(bad)


def test_plans_share_the_in_flight_cap() -> None:
    """The processes' in-flight caps add up to the asked total."""
    plans = HandshakeOptions(ws=WS, concurrency=201, procs=4).plans("127.0.0.1", first_done=False)
    assert [plan.max_in_flight for plan in plans] == [51, 50, 50, 50]


def test_plans_interleave_one_schedule() -> None:
    """Process i takes attempts i, i + N, i + 2N, … of the one schedule."""
    plans = HandshakeOptions(ws=WS, rate=1000, procs=3).plans("127.0.0.1", first_done=False)
    assert [(plan.offset, plan.stride) for plan in plans] == [(0, 3), (1, 3), (2, 3)]
    assert all(plan.rate == 1000 for plan in plans)


def test_the_first_attempt_is_left_out_once_made() -> None:
    """When attempt 0 was made alone, only process 0 skips it."""
    plans = HandshakeOptions(ws=WS, procs=2).plans("127.0.0.1", first_done=True)
    assert [plan.first for plan in plans] == [1, 0]


def test_requests_carry_distinct_keys() -> None:
    """Each pooled upgrade request has its own Sec-WebSocket-Key."""
    requests = HandshakeOptions(ws=WS).requests()
    keys = {line for r in requests for line in r.split(b"\r\n") if line.startswith(b"Sec-")}
    assert len(keys) > len(requests)  # a key line per request, plus the version line


def test_in_process_needs_one_process() -> None:
    """The in-process generator is a single thread."""
    with pytest.raises(ValueError):
        HandshakeOptions(ws=WS, procs=2, in_process=True)


def tally(
    counts: dict[str, int], *, started: int, start: float, last: float, end: float
) -> RawTally:
    raw = RawTally(started=started, start_at=start, last_start=last, ended_at=end, cpu_s=1.0)
    raw.counts.update(counts)
    raw.latencies["429"] = array("d", [0.001] * counts.get("429", 0))
    return raw


def test_tallies_merge_counts_and_spans() -> None:
    """Merging adds the counts and keeps the earliest start and the latest end."""
    a = tally({"429": 3}, started=3, start=10.0, last=11.0, end=12.0)
    b = tally({"429": 2, "timeout": 1}, started=3, start=9.5, last=11.5, end=13.0)
    a.merge(b)
    assert (a.counts["429"], a.counts["timeout"], a.started) == (5, 1, 6)
    assert (a.start_at, a.last_start, a.ended_at) == (9.5, 11.5, 13.0)
    assert len(a.latencies["429"]) == 5


def test_a_duration_run_offers_over_its_duration() -> None:
    """Started per second is over the duration when the duration ended the run."""
    options = HandshakeOptions(ws=WS, rate=100, duration=2, procs=2)
    raws = [
        tally({"429": 100}, started=100, start=5.0, last=6.99, end=7.2),
        tally({"429": 100}, started=100, start=5.0, last=6.98, end=7.1),
    ]
    result = collect(options, raws, HandshakeResult(options))
    assert result.started_per_s == 100.0
    assert result.elapsed == pytest.approx(2.2)
    assert result.unclean == 0


def test_a_count_run_offers_over_its_starts() -> None:
    """Started per second is over the span of the starts when the count ended the run."""
    options = HandshakeOptions(ws=WS, count=50)
    raws = [tally({"429": 50}, started=50, start=1.0, last=1.5, end=1.6)]
    result = collect(options, raws, HandshakeResult(options))
    assert result.started_per_s == pytest.approx(100.0)


def figures(share: float) -> WorkerFigures:
    return WorkerFigures(started=1, cpu_s=share, wall_s=1.0, max_in_flight=1)


def test_a_busy_generator_short_of_its_rate_is_the_limit() -> None:
    """A process at ≥90% of its core while short of the asked rate: generator-bound."""
    result = HandshakeResult(HandshakeOptions(ws=WS, rate=1000), start_window=1.0)
    result.tally.add_many("429", 500)
    result.workers = [figures(0.97)]
    assert result.generator_verdict().startswith("generator-bound")


def test_an_idle_generator_that_kept_the_rate_kept_up() -> None:
    """At the asked rate with CPU to spare, the generator was not the limit."""
    result = HandshakeResult(HandshakeOptions(ws=WS, rate=1000), start_window=1.0)
    result.tally.add_many("429", 1000)
    result.workers = [figures(0.40)]
    assert result.generator_verdict() == "kept up"


def test_process_cpu_counts_fields_after_the_command_name() -> None:
    """utime + stime are read after the last ')', whatever the command name holds."""
    fields = ["S"] + ["0"] * 10 + ["150", "50"] + ["0"] * 10
    stat = "1234 (python (flood) x) " + " ".join(fields)
    assert parse_process_cpu(stat, ticks=100) == 2.0


def test_process_cpu_refuses_other_text() -> None:
    """Text that is not a stat line is a ValueError."""
    with pytest.raises(ValueError):
        parse_process_cpu("nonsense")


PROC_STAT_BEFORE = """cpu  100 0 100 800 0 0 0 0 0 0
cpu0 50 0 50 400 0 0 0 0 0 0
cpu1 50 0 50 400 0 0 0 0 0 0
intr 1 2 3
"""
PROC_STAT_AFTER = """cpu  300 0 200 1300 0 0 0 0 0 0
cpu0 150 0 70 400 0 0 30 0 0 0
cpu1 50 0 50 480 0 0 20 0 0 0
intr 1 2 3
"""


def test_core_busy_includes_softirq_and_excludes_idle() -> None:
    """Each core's busy share over the interval counts softirq time as busy."""
    shares = core_busy(parse_core_times(PROC_STAT_BEFORE), parse_core_times(PROC_STAT_AFTER))
    assert shares == {"cpu0": 1.0, "cpu1": pytest.approx(0.2)}


def test_core_softirq_is_its_share_of_the_interval() -> None:
    """Softirq ticks over all ticks of the interval, per core."""
    shares = core_softirq(parse_core_times(PROC_STAT_BEFORE), parse_core_times(PROC_STAT_AFTER))
    assert shares == {"cpu0": pytest.approx(0.2), "cpu1": pytest.approx(0.2)}


def test_full_generator_cores_short_of_the_rate_are_the_limit() -> None:
    """Every core the generator may use ≥95% busy while short of the rate: say so."""
    result = HandshakeResult(HandshakeOptions(ws=WS, rate=1000), start_window=1.0)
    result.tally.add_many("429", 500)
    result.workers = [figures(0.60)]
    result.cores = {"cpu0": 0.5, "cpu1": 0.97}
    result.generator_cores = ("cpu1",)
    assert result.generator_verdict().startswith("generator's cores full (cpu1")


def test_a_short_run_at_its_in_flight_cap_says_so() -> None:
    """Short of the rate with every slot taken: the answers were too slow for the cap."""
    options = HandshakeOptions(ws=WS, rate=1000, concurrency=10)
    result = HandshakeResult(options, start_window=1.0)
    result.tally.add_many("429", 500)
    result.workers = [WorkerFigures(started=500, cpu_s=0.3, wall_s=1.0, max_in_flight=10)]
    assert result.generator_verdict() == "short: in-flight cap reached"


def test_cli_sources_and_source_ips_exclude_each_other() -> None:
    """--sources and --source-ips cannot both be given."""
    with pytest.raises(SystemExit) as caught:
        main(["flood", "handshake", "--sources", "4", "--source-ips", "127.0.0.2"])
    assert caught.value.code == 2


def test_cli_ramp_leaves_the_rate_to_its_steps(capsys: pytest.CaptureFixture[str]) -> None:
    """--ramp with --rate is a usage error (exit 2)."""
    assert main(["flood", "handshake", "--ramp", "100:200:100", "--rate", "5"]) == 2
    assert "--ramp" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["100", "200:100:10", "1:2:0", "a:b:c"])
def test_cli_ramp_spec_is_start_stop_step(bad: str) -> None:
    """A ramp is START:STOP:STEP with 0 < START <= STOP and STEP > 0."""
    with pytest.raises(SystemExit) as caught:
        main(["flood", "handshake", "--ramp", bad])
    assert caught.value.code == 2


def test_the_worker_refuses_to_run_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """The generator process's entry point wants its four numbers."""
    assert worker_main([]) == 2
    assert "not meant to be run by hand" in capsys.readouterr().err


def test_a_ramp_allows_more_in_flight_by_default() -> None:
    """200 attempts in flight by default; 2,000 with --ramp, so the cap is not the first limit."""
    plain = build_options(build_parser().parse_args(["handshake"]))
    ramp = build_options(build_parser().parse_args(["handshake", "--ramp", "100:200:100"]))
    assert isinstance(plain, HandshakeOptions)
    assert isinstance(ramp, RampOptions)
    assert (plain.concurrency, ramp.handshake.concurrency) == (200, 2000)
