"""Spec for the ramp's pure parts: its rates, the pair's figures, and when a step breaks."""

from __future__ import annotations

import math

import pytest

from relay.flood._handshake import HandshakeOptions, HandshakeResult
from relay.flood._pair import round_trip_figures
from relay.flood._ramp import (
    RampOptions,
    RampResult,
    RampStep,
    default_pair_source,
    judge,
    ramp_rates,
)
from relay.flood._target import parse_endpoint

WS = parse_endpoint("ws://127.0.0.1:8765/ws", "ws")
HTTP = parse_endpoint("http://127.0.0.1:8080", "http")


def options(**changes: object) -> RampOptions:
    values: dict[str, object] = {
        "handshake": HandshakeOptions(ws=WS),
        "rates": (1000.0,),
        "http": HTTP,
        "server_pid": 1,
    }
    return RampOptions(**(values | changes))  # type: ignore[arg-type]


def test_rates_run_from_start_to_stop_inclusive() -> None:
    """START:STOP:STEP gives START, START+STEP, … up to and including STOP."""
    assert ramp_rates(2000, 10000, 2000) == (2000, 4000, 6000, 8000, 10000)
    assert ramp_rates(5, 5, 1) == (5,)


def test_a_ramp_has_a_bounded_number_of_steps() -> None:
    """More than 40 steps is refused (every run is bounded)."""
    with pytest.raises(ValueError):
        ramp_rates(1, 100, 1)


def test_a_ramp_gives_no_rate_of_its_own() -> None:
    """The flood options of a ramp carry no rate: the steps set it."""
    with pytest.raises(ValueError):
        options(handshake=HandshakeOptions(ws=WS, rate=10))


def test_the_pair_stays_under_the_send_bucket() -> None:
    """More than 50 round trips a second would trip the relay's per-device send limit."""
    with pytest.raises(ValueError):
        options(pair_rate=60)


def test_the_pair_gets_a_source_the_flood_does_not_use() -> None:
    """The pair binds the highest 127.0.0.x the flood leaves free, for its own bucket."""
    assert default_pair_source("127.0.0.1", ()) == "127.0.0.254"
    assert default_pair_source("127.0.0.1", ("127.0.0.254",)) == "127.0.0.253"
    assert default_pair_source("::1", ()) is None


def test_round_trips_by_nearest_rank() -> None:
    """With every ping answered, p50 and p99 are nearest-rank round trips, in ms."""
    rtts = [i / 1000 for i in range(1, 101)]
    figures = round_trip_figures(rtts, rtts)
    assert (figures.p50_ms, figures.p99_ms, figures.max_ms) == (50.0, 99.0, 100.0)


def test_unanswered_pings_are_infinitely_late() -> None:
    """Two pings lost in a hundred make the p99 infinite."""
    figures = round_trip_figures([0.0] * 100, [0.001] * 98)
    assert figures.unanswered == 2
    assert figures.p99_ms == math.inf
    assert figures.to_json()["p99_ms"] is None
    assert figures.to_json()["p99_infinite"] is True


def flood_step(offered: float, *, answered: int, unclean: int, started: float) -> RampStep:
    """A step whose generator started *started* attempts/s; a quick pair; 0.5 s relay CPU."""
    attempts = answered + unclean
    result = HandshakeResult(HandshakeOptions(ws=WS, rate=offered), start_window=attempts / started)
    result.tally.add_many("429", answered)
    result.tally.add_many("timeout", unclean)
    step = RampStep(offered=offered, window_s=1.0, flood=result, relay_cpu_s=0.5)
    step.pair = round_trip_figures([0.0] * 100, [0.005] * 100)
    return step


def test_a_clean_fast_step_is_not_broken() -> None:
    """429s only and a quick pair: the step holds."""
    step = flood_step(1000, answered=1000, unclean=0, started=1000)
    judge(step, options())
    assert step.broken == []
    assert step.verdict() == "ok"


def test_a_slow_pair_breaks_a_step() -> None:
    """A pair p99 over the threshold breaks the step."""
    step = flood_step(1000, answered=1000, unclean=0, started=1000)
    step.pair = round_trip_figures([0.0] * 100, [0.080] * 100)
    judge(step, options())
    assert step.broken == ["pair p99 80.0 ms > 50 ms"]


def test_unclean_refusals_break_a_step() -> None:
    """More than 1% of attempts without an HTTP answer breaks the step."""
    step = flood_step(1000, answered=970, unclean=30, started=1000)
    judge(step, options())
    assert len(step.broken) == 1
    assert "3.0% of attempts unanswered" in step.broken[0]


def test_a_generator_short_of_the_rate_is_flagged_not_broken() -> None:
    """Offering less than 95% of the asked rate marks the step, without breaking it."""
    step = flood_step(1000, answered=900, unclean=0, started=900)
    judge(step, options())
    assert step.generator_short
    assert step.broken == []


def test_a_vanished_relay_breaks_a_step() -> None:
    """With a server pid given, a step whose relay CPU could not be read is broken."""
    step = flood_step(1000, answered=1000, unclean=0, started=1000)
    step.relay_cpu_s = None
    judge(step, options())
    assert step.broken == ["the relay process is gone"]


def test_cpu_per_refused_attempt_as_measured_and_net_of_the_baseline() -> None:
    """µs per refusal: relay CPU over refusals, and the same after the baseline's CPU rate."""
    step = flood_step(1000, answered=1000, unclean=0, started=1000)
    raw, net = step.cpu_per_refused_us(baseline_share=0.1)
    assert raw == pytest.approx(500.0)  # 0.5 s for 1,000 refusals
    assert net == pytest.approx(400.0)  # (0.5 - 0.1 * 1 s) for 1,000


def test_the_breaking_rate_is_the_first_broken_flood_step() -> None:
    """The result names the first broken step after the baseline."""
    result = RampResult(options(rates=(1000.0, 2000.0)))
    baseline = RampStep(offered=0.0, window_s=1.0, relay_cpu_s=0.1)
    ok = flood_step(1000, answered=1000, unclean=0, started=1000)
    bad = flood_step(2000, answered=2000, unclean=0, started=2000)
    bad.broken.append("pair p99 80.0 ms > 50 ms")
    result.steps = [baseline, ok, bad]
    assert result.to_json()["breaking_rate_per_s"] == 2000
    assert result.summary().startswith("broke at 2,000/s offered")


def test_a_lasting_break_is_told_from_a_noisy_step() -> None:
    """The sustained breaking rate is where every step from there on is broken."""
    result = RampResult(options(rates=(1000.0, 2000.0, 3000.0, 4000.0), keep_going=True))
    steps = [flood_step(r, answered=int(r), unclean=0, started=r) for r in (1000, 2000, 3000, 4000)]
    for broken in (steps[0], steps[2], steps[3]):
        broken.broken.append("pair p99 80.0 ms > 50 ms")
    result.steps = steps
    doc = result.to_json()
    assert doc["breaking_rate_per_s"] == 1000
    assert doc["sustained_breaking_rate_per_s"] == 3000
