"""LogSampler: one line per event and source per interval, counting the rest."""

from __future__ import annotations

from relay.obs import LogSampler


def test_first_occurrence_is_logged() -> None:
    """A new (event, source) is admitted with nothing suppressed."""
    assert LogSampler(interval=10).admit("ratelimit.handshake", "1.2.3.4", 0.0) == 0


def test_repeats_within_the_interval_are_counted_not_logged() -> None:
    """Within the interval repeats are suppressed; the next line reports how many."""
    sampler = LogSampler(interval=10)
    sampler.admit("e", "ip", 0.0)
    assert [sampler.admit("e", "ip", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert sampler.admit("e", "ip", 10.0) == 3


def test_sources_and_events_are_sampled_separately() -> None:
    """Another source or another event is its own key."""
    sampler = LogSampler(interval=10)
    sampler.admit("e", "ip1", 0.0)
    assert sampler.admit("e", "ip2", 0.0) == 0
    assert sampler.admit("f", "ip1", 0.0) == 0


def test_memory_is_bounded() -> None:
    """Past max_keys the longest-quiet source is forgotten."""
    sampler = LogSampler(interval=10, max_keys=2)
    for ip in ("a", "b", "c"):
        sampler.admit("e", ip, 0.0)
    assert sampler.admit("e", "a", 1.0) == 0  # forgotten, so logged as new


def test_warn_logs_admitted_events_with_the_suppressed_count() -> None:
    """warn() logs the first line and the next after the interval; fields may be named source."""

    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, object]]] = []

        def warning(self, event: str, **fields: object) -> None:
            self.lines.append((event, fields))

    times = iter((0.0, 1.0, 2.0, 10.0))
    log, sampler = Log(), LogSampler(lambda: next(times), interval=10)
    for _ in range(4):
        sampler.warn(log, "ws.auth_failed", "1.2.3.4", source="query")
    assert log.lines == [
        ("ws.auth_failed", {"ip": "1.2.3.4", "suppressed": 0, "source": "query"}),
        ("ws.auth_failed", {"ip": "1.2.3.4", "suppressed": 2, "source": "query"}),
    ]


def test_a_suppressed_event_never_touches_the_logger() -> None:
    """Suppressed warn() and error() calls do not even look up the log method.

    On structlog's lazy proxy each attribute access binds a new logger: paid
    for every refusal of a flood, it cut the shedding rate by a quarter.
    """

    class Log:
        lookups = 0

        def __getattr__(self, name: str) -> object:
            Log.lookups += 1
            return lambda event, **fields: None

    log, sampler = Log(), LogSampler(lambda: 0.0, interval=10)
    sampler.warn(log, "ratelimit.handshake", "1.2.3.4")
    sampler.error(log, "ws.connection_error", "1.2.3.4")
    assert Log.lookups == 2
    for _ in range(100):
        sampler.warn(log, "ratelimit.handshake", "1.2.3.4", retry_after=1.0)
        sampler.error(log, "ws.connection_error", "1.2.3.4")
    assert Log.lookups == 2


def test_due_admits_on_the_samplers_own_clock() -> None:
    """due() is admit() at the clock's time: the first is due, repeats are counted."""
    times = iter((0.0, 5.0, 10.0))
    sampler = LogSampler(lambda: next(times), interval=10)
    assert [sampler.due("e", "ip") for _ in range(3)] == [0, None, 1]
