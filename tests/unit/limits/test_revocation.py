"""The revocation list: session ids revoked until a time."""

from __future__ import annotations

from relay.limits import RevocationList


def test_revoked_session_is_revoked_before_until() -> None:
    """A session revoked until t=100 is revoked at t=0 and t=99.5."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    assert revoked.is_revoked("s1", 0.0)
    assert revoked.is_revoked("s1", 99.5)


def test_revocation_ends_exactly_at_until() -> None:
    """At t=until the session is no longer revoked."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    assert not revoked.is_revoked("s1", 100.0)


def test_unknown_session_is_not_revoked() -> None:
    """A session never revoked is not revoked."""
    assert not RevocationList().is_revoked("nobody", 0.0)


def test_revocations_are_per_session() -> None:
    """Revoking one session leaves others alone."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    assert not revoked.is_revoked("s2", 0.0)


def test_revoking_again_can_extend() -> None:
    """A later until replaces an earlier one."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    revoked.revoke("s1", 200.0)
    assert revoked.is_revoked("s1", 150.0)


def test_revoking_again_never_shortens() -> None:
    """An earlier until does not un-revoke a session."""
    revoked = RevocationList()
    revoked.revoke("s1", 200.0)
    revoked.revoke("s1", 100.0)
    assert revoked.is_revoked("s1", 150.0)


def test_expired_entry_is_dropped_when_asked_about() -> None:
    """is_revoked forgets an entry that has expired."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    assert not revoked.is_revoked("s1", 100.0)
    assert len(revoked) == 0


def test_sweep_drops_expired_entries_only() -> None:
    """sweep forgets exactly the entries expired at that time."""
    revoked = RevocationList()
    revoked.revoke("s1", 100.0)
    revoked.revoke("s2", 200.0)
    assert revoked.sweep(100.0) == 1
    assert len(revoked) == 1
    assert revoked.is_revoked("s2", 100.0)
