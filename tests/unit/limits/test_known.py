"""KnownSources: remembered members expire, and memory stays bounded."""

from __future__ import annotations

from relay.limits import KnownSources


def test_a_member_is_known_until_its_expiry() -> None:
    """Known strictly before the expiry time, forgotten at it."""
    known = KnownSources()
    known.remember("alice", "10.0.0.1", until=100.0)
    assert known.knows("alice", "10.0.0.1", 99.9)
    assert not known.knows("alice", "10.0.0.1", 100.0)
    assert len(known) == 0  # the expired member and then its empty key are dropped


def test_remembering_again_extends_but_never_shortens() -> None:
    """A later, shorter remember keeps the longer expiry."""
    known = KnownSources()
    known.remember("alice", "ip", until=100.0)
    known.remember("alice", "ip", until=50.0)
    assert known.knows("alice", "ip", 75.0)


def test_each_key_keeps_its_newest_members() -> None:
    """Past per_key members the oldest is forgotten."""
    known = KnownSources(per_key=2)
    for ip in ("a", "b", "c"):
        known.remember("alice", ip, until=100.0)
    assert [known.knows("alice", ip, 0.0) for ip in ("a", "b", "c")] == [False, True, True]


def test_keys_are_bounded_least_recently_remembered_first() -> None:
    """Past max_keys the key remembered longest ago goes."""
    known = KnownSources(max_keys=2)
    for name in ("alice", "bob", "carol"):
        known.remember(name, "ip", until=100.0)
    assert len(known) == 2
    assert not known.knows("alice", "ip", 0.0) and known.knows("carol", "ip", 0.0)
