"""LogSampler: one line per event and source per interval, counting the rest."""

from __future__ import annotations

from relay.obs import LogSampler


def test_first_occurrence_is_logged() -> None:
    """A new (event, source) is admitted with nothing suppressed."""
    assert LogSampler(10).admit("ratelimit.handshake", "1.2.3.4", 0.0) == 0


def test_repeats_within_the_interval_are_counted_not_logged() -> None:
    """Within the interval repeats are suppressed; the next line reports how many."""
    sampler = LogSampler(10)
    sampler.admit("e", "ip", 0.0)
    assert [sampler.admit("e", "ip", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert sampler.admit("e", "ip", 10.0) == 3


def test_sources_and_events_are_sampled_separately() -> None:
    """Another source or another event is its own key."""
    sampler = LogSampler(10)
    sampler.admit("e", "ip1", 0.0)
    assert sampler.admit("e", "ip2", 0.0) == 0
    assert sampler.admit("f", "ip1", 0.0) == 0


def test_memory_is_bounded() -> None:
    """Past max_keys the longest-quiet source is forgotten."""
    sampler = LogSampler(10, max_keys=2)
    for ip in ("a", "b", "c"):
        sampler.admit("e", ip, 0.0)
    assert sampler.admit("e", "a", 1.0) == 0  # forgotten, so logged as new
