"""Spec for flood's pure accounting: percentiles, rates, outcomes, the message ledger."""

from __future__ import annotations

import pytest

from relay.flood._stats import (
    HANDSHAKE_OUTCOMES,
    Latencies,
    MessageLedger,
    OutcomeTally,
    handshake_outcome,
    percentile,
    rate,
)

HUNDRED = [float(i) for i in range(1, 101)]


@pytest.mark.parametrize(
    ("q", "expected"), [(50, 50.0), (95, 95.0), (99, 99.0), (100, 100.0), (1, 1.0), (0.5, 1.0)]
)
def test_nearest_rank_on_one_to_hundred(q: float, expected: float) -> None:
    assert percentile(HUNDRED, q) == expected


def test_nearest_rank_is_an_observed_value_rounding_up() -> None:
    """Rank = ceil(q * n / 100), computed exactly (95 % of 20 is rank 19, not 20)."""
    twenty = [float(i) for i in range(1, 21)]
    assert percentile(twenty, 95) == 19.0
    assert percentile(twenty, 96) == 20.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert percentile([10.0, 20.0, 30.0], 99.9) == 30.0
    thousand = [float(i) for i in range(1, 1001)]
    assert percentile(thousand, 99.9) == 999.0


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 1) == 7.0
    assert percentile([7.0], 100) == 7.0
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError):
            percentile([1.0], bad)


def test_rate_over_a_duration() -> None:
    assert rate(50, 2.0) == 25.0
    assert rate(3, 0.5) == 6.0
    assert rate(0, 10.0) == 0.0
    assert rate(5, 0.0) == 0.0
    assert rate(5, -1.0) == 0.0


def test_latency_summary_in_milliseconds() -> None:
    summary = Latencies([0.004, 0.001, 0.003, 0.002]).summary()
    assert summary.count == 4
    assert summary.min_ms == pytest.approx(1.0)
    assert summary.mean_ms == pytest.approx(2.5)
    assert summary.p50_ms == pytest.approx(2.0)
    assert summary.p95_ms == pytest.approx(4.0)
    assert summary.p99_ms == pytest.approx(4.0)
    assert summary.max_ms == pytest.approx(4.0)
    assert summary.to_json()["p50_ms"] == 2.0


def test_empty_latency_summary_is_all_none() -> None:
    summary = Latencies().summary()
    assert summary.count == 0
    assert summary.to_json() == {
        "count": 0,
        "min_ms": None,
        "mean_ms": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }


def test_handshake_outcome_labels() -> None:
    assert [handshake_outcome(s) for s in (101, 401, 403, 429, 503)] == [
        "101",
        "401",
        "403",
        "429",
        "503",
    ]
    assert handshake_outcome(404) == "other"
    assert handshake_outcome(200) == "other"
    assert handshake_outcome(500) == "other"


def test_outcome_counting_keeps_known_labels_in_order() -> None:
    tally = OutcomeTally(HANDSHAKE_OUTCOMES)
    for outcome, latency in [("101", 0.010), ("429", 0.002), ("429", 0.004), ("timeout", None)]:
        tally.add(outcome, latency)
    tally.add("weird")
    counts = tally.counts()
    assert list(counts) == [*HANDSHAKE_OUTCOMES, "weird"]
    assert counts == {
        "101": 1,
        "401": 0,
        "403": 0,
        "429": 2,
        "503": 0,
        "other": 0,
        "error": 0,
        "timeout": 1,
        "weird": 1,
    }
    assert tally.total == 5
    assert tally["429"] == 2
    assert tally["never"] == 0
    assert tally.rates(2.0)["429"] == 1.0
    assert tally.latencies("429").count == 2
    assert tally.latencies("429").max_ms == pytest.approx(4.0)
    assert tally.latencies("timeout").count == 0
    merged = tally.latencies()
    assert merged.count == 3
    assert merged.max_ms == pytest.approx(10.0)


def test_ledger_clean_run() -> None:
    ledger = MessageLedger()
    ids = [ledger.send(now=10.0 + i) for i in range(3)]
    assert ids == [0, 1, 2]
    for i in ids:
        ledger.accept(i, now=10.5 + i)
        assert ledger.deliver(i, latency=0.25)
    assert ledger.settled
    result = ledger.result()
    assert result.to_json() == {
        "sent": 3,
        "accepted": 3,
        "refused": 0,
        "unanswered": 0,
        "delivered": 3,
        "lost": 0,
        "duplicated": 0,
        "extra_deliveries": 0,
        "unconfirmed": 0,
        "unknown": 0,
    }
    assert ledger.accept_latency.summary().p50_ms == pytest.approx(500.0)
    assert ledger.delivery_latency.summary().p99_ms == pytest.approx(250.0)


def test_ledger_finds_loss_duplicates_refusals_and_strays() -> None:
    ledger = MessageLedger()
    for _ in range(6):
        ledger.send(now=0.0)
    ledger.accept(0, 1.0)  # accepted, never delivered: lost
    assert not ledger.settled
    ledger.accept(1, 1.0)
    assert ledger.deliver(1, 0.1)
    assert not ledger.deliver(1, 0.2)  # duplicate
    assert not ledger.deliver(1, 0.3)  # and again
    assert ledger.deliver(2, 0.1)  # delivered before accepted ...
    ledger.accept(2, 1.0)  # ... then accepted: fine
    ledger.refuse(3)
    ledger.accept(3, 1.0)  # a refused message keeps its first answer
    assert ledger.deliver(4, 0.1)  # delivered, never answered: unconfirmed
    # 5: sent, never answered, never delivered: unanswered
    assert not ledger.deliver(99, 0.1)  # never sent: unknown
    ledger.accept(99, 1.0)  # ignored
    ledger.refuse(-1)  # ignored
    result = ledger.result()
    assert (result.sent, result.accepted, result.refused) == (6, 3, 1)
    assert result.unanswered == 2
    assert result.delivered == 3
    assert result.lost == 1
    assert result.duplicated == 1
    assert result.extra_deliveries == 2
    assert result.unconfirmed == 1
    assert result.unknown == 1
    assert ledger.delivery_latency.summary().count == 3
    assert not ledger.settled
