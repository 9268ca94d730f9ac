"""Latency, percentile, outcome and message accounting for ``relay flood``.

Sans-I/O: no clock, no sockets. Callers pass times (any monotonic clock, in
seconds) and get figures back; every figure is exact (no sampling, no
histogram buckets). Latencies are kept as C doubles (8 bytes a sample) and
messages as a few bytes each, so a 10-minute run at tens of thousands of
events per second stays within a few hundred MB.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

HANDSHAKE_OUTCOMES = ("101", "401", "403", "429", "503", "other", "error", "timeout")
"""Every outcome of one handshake attempt, in report order."""

_KNOWN_STATUSES = frozenset({101, 401, 403, 429, 503})


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank *q*-th percentile of the ascending *sorted_values*.

    The smallest sample such that at least *q* % of the samples are less
    than or equal to it (so it is always an observed value). None for no
    samples. Raises ValueError unless ``0 < q <= 100``.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {q}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = int((Decimal(str(q)) * n / 100).to_integral_value(rounding=ROUND_CEILING))
    return sorted_values[max(rank, 1) - 1]


def rate(count: int, seconds: float) -> float:
    """*count* per second over *seconds*; 0.0 when the span is not positive."""
    return count / seconds if seconds > 0 else 0.0


def handshake_outcome(status: int) -> str:
    """The outcome label of an HTTP status answered to a handshake."""
    return str(status) if status in _KNOWN_STATUSES else "other"


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Figures of a set of latencies, in milliseconds (None when no samples)."""

    count: int
    min_ms: float | None
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Latencies:
    """Latency samples in seconds; :meth:`summary` reports milliseconds."""

    __slots__ = ("_samples",)

    def __init__(self, samples: Iterable[float] = ()) -> None:
        self._samples = array("d", samples)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def extend(self, other: Latencies) -> None:
        self._samples.extend(other._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def summary(self) -> LatencySummary:
        """Count, min, mean, p50/p95/p99 (nearest rank) and max, in ms."""
        ordered = sorted(self._samples)
        if not ordered:
            return LatencySummary(0, None, None, None, None, None, None)

        def ms(q: float) -> float:
            value = percentile(ordered, q)
            assert value is not None
            return value * 1000

        return LatencySummary(
            count=len(ordered),
            min_ms=ordered[0] * 1000,
            mean_ms=sum(ordered) / len(ordered) * 1000,
            p50_ms=ms(50),
            p95_ms=ms(95),
            p99_ms=ms(99),
            max_ms=ordered[-1] * 1000,
        )


class OutcomeTally:
    """Counts (and optionally latencies) per outcome label.

    Labels in *known* are always reported, in that order, even at zero;
    others follow in the order first seen.
    """

    def __init__(self, known: Sequence[str] = ()) -> None:
        self._counts: dict[str, int] = dict.fromkeys(known, 0)
        self._latencies: dict[str, Latencies] = {}

    def add(self, outcome: str, latency: float | None = None) -> None:
        """Count one *outcome*; keep its *latency* (seconds) when given."""
        self._counts[outcome] = self._counts.get(outcome, 0) + 1
        if latency is not None:
            self._latencies.setdefault(outcome, Latencies()).add(latency)

    def add_many(self, outcome: str, count: int, latencies: Iterable[float] = ()) -> None:
        """Count *count* more of *outcome*; keep the *latencies* (seconds) given for them."""
        self._counts[outcome] = self._counts.get(outcome, 0) + count
        samples = Latencies(latencies)
        if len(samples):
            self._latencies.setdefault(outcome, Latencies()).extend(samples)

    def __getitem__(self, outcome: str) -> int:
        return self._counts.get(outcome, 0)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def rates(self, seconds: float) -> dict[str, float]:
        """Per-outcome counts per second over *seconds*."""
        return {k: rate(v, seconds) for k, v in self._counts.items()}

    def latencies(self, outcome: str | None = None) -> LatencySummary:
        """Latency of one outcome, or of all outcomes together (None)."""
        if outcome is not None:
            return self._latencies.get(outcome, Latencies()).summary()
        merged = Latencies()
        for samples in self._latencies.values():
            merged.extend(samples)
        return merged.summary()


_SENT, _ACCEPTED, _REFUSED, _DELIVERED = 1, 2, 4, 8


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """What happened to every message of a run (see :class:`MessageLedger`)."""

    sent: int
    accepted: int
    refused: int
    unanswered: int
    """Sent, but neither accepted nor refused (yet)."""
    delivered: int
    """Distinct messages delivered at least once."""
    lost: int
    """Accepted, never delivered."""
    duplicated: int
    """Distinct messages delivered more than once."""
    extra_deliveries: int
    """Deliveries beyond the first, summed over all messages."""
    unconfirmed: int
    """Delivered, but the sender never saw ``accepted`` (nor a refusal)."""
    unknown: int
    """Deliveries of ids this run never sent."""

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class MessageLedger:
    """Tracks each message id from send to accept/refusal to delivery.

    Ids are allocated by :meth:`send` as 0, 1, 2, ...; every other call
    accepts any int and counts ids it never issued as ``unknown`` (or
    ignores them, for accept and refuse). A message answered twice keeps
    its first answer. Delivery may come before or after ``accepted``.
    """

    def __init__(self) -> None:
        self._state = bytearray()
        self._deliveries = bytearray()
        self._sent_at = array("d")
        self.accepted = 0
        self.refused = 0
        self.delivered = 0
        self.extra_deliveries = 0
        self.unknown = 0
        self._accepted_undelivered = 0
        self.accept_latency = Latencies()
        self.delivery_latency = Latencies()

    @property
    def sent(self) -> int:
        return len(self._state)

    def send(self, now: float) -> int:
        """Allocate the next id for a message sent at *now*."""
        self._state.append(_SENT)
        self._deliveries.append(0)
        self._sent_at.append(now)
        return len(self._state) - 1

    def _known(self, mid: int) -> bool:
        return 0 <= mid < len(self._state)

    def accept(self, mid: int, now: float) -> None:
        """The relay accepted *mid* at *now* (records send → accepted latency)."""
        if not self._known(mid) or self._state[mid] & (_ACCEPTED | _REFUSED):
            return
        self._state[mid] |= _ACCEPTED
        self.accepted += 1
        self.accept_latency.add(now - self._sent_at[mid])
        if not self._state[mid] & _DELIVERED:
            self._accepted_undelivered += 1

    def refuse(self, mid: int) -> None:
        """The relay refused *mid* (an ``error`` frame referring to it)."""
        if not self._known(mid) or self._state[mid] & (_ACCEPTED | _REFUSED):
            return
        self._state[mid] |= _REFUSED
        self.refused += 1

    def deliver(self, mid: int, latency: float) -> bool:
        """*mid* reached its receiver *latency* seconds after it was sent.

        True for its first delivery; False for a duplicate or an unknown id.
        """
        if not self._known(mid):
            self.unknown += 1
            return False
        if self._state[mid] & _DELIVERED:
            self.extra_deliveries += 1
            self._deliveries[mid] = min(255, self._deliveries[mid] + 1)
            return False
        self._state[mid] |= _DELIVERED
        self._deliveries[mid] = 1
        self.delivered += 1
        self.delivery_latency.add(latency)
        if self._state[mid] & _ACCEPTED:
            self._accepted_undelivered -= 1
        return True

    @property
    def unanswered(self) -> int:
        return self.sent - self.accepted - self.refused

    @property
    def settled(self) -> bool:
        """Every message answered, and every accepted one delivered."""
        return self.unanswered == 0 and self._accepted_undelivered == 0

    def result(self) -> LedgerResult:
        """The figures now (a scan over every id: call once, at the end)."""
        unconfirmed = sum(
            1 for s in self._state if s & _DELIVERED and not s & (_ACCEPTED | _REFUSED)
        )
        return LedgerResult(
            sent=self.sent,
            accepted=self.accepted,
            refused=self.refused,
            unanswered=self.unanswered,
            delivered=self.delivered,
            lost=self._accepted_undelivered,
            duplicated=sum(1 for d in self._deliveries if d > 1),
            extra_deliveries=self.extra_deliveries,
            unconfirmed=unconfirmed,
            unknown=self.unknown,
        )
