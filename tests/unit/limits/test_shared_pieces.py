"""The Redis adapter's pure pieces: key names, the refusal cache, the unavailability table."""

from __future__ import annotations

import pytest

from relay.config import Config
from relay.limits import FAIL_MODES, FailMode, names, policies
from relay.limits._keys import KeySpace, glob_escape
from relay.limits._refusals import RecentRefusals
from relay.limits._unavailable import fail_mode

# --- key names -------------------------------------------------------------------


def test_bucket_and_lockout_keys_read_back_to_their_limit_and_key() -> None:
    """A key with colons in it (an IPv6 source) reads back whole."""
    keys = KeySpace("relay:")
    assert keys.parse(keys.bucket("ws_handshake", "2001:db8::/64")) == (
        "ws_handshake",
        "2001:db8::/64",
    )
    assert keys.parse(keys.lockout("login_failures", "alice|10.0.0.1")) == (
        "login_failures",
        "alice|10.0.0.1",
    )
    assert keys.parse(keys.revoked("s1")) is None
    assert keys.parse("other:tb:x:y") is None


def test_every_name_lives_under_the_prefix() -> None:
    """Buckets, lockouts, known sources, revocations and the marker all start with it."""
    keys = KeySpace("chat:")
    names_ = [
        keys.bucket("a", "k"),
        keys.lockout("a", "k"),
        keys.known("k"),
        keys.revoked("s"),
        keys.alive,
    ]
    assert all(name.startswith("chat:") for name in names_)
    assert len(set(names_)) == len(names_)


def test_scan_patterns_take_the_prefix_and_keys_literally() -> None:
    """Glob characters in a prefix or a key prefix match only themselves."""
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    keys = KeySpace("r[1]:")
    assert keys.lockouts_matching("login_failures", "al*") == "r\\[1\\]:lo:login_failures:al\\**"
    assert keys.buckets_matching() == "r\\[1\\]:tb:*"


# --- the refusal cache -------------------------------------------------------------


def test_a_noted_wait_is_counted_down_then_forgotten() -> None:
    """blocked_for answers the time left, and None once it has passed."""
    cache = RecentRefusals()
    cache.note("ws_handshake", "ip", now=10.0, wait=0.5)
    assert cache.blocked_for("ws_handshake", "ip", now=10.2) == pytest.approx(0.3)
    assert cache.blocked_for("ws_handshake", "other", now=10.2) is None
    assert cache.blocked_for("ws_handshake", "ip", now=10.5) is None
    assert len(cache) == 0


def test_a_take_that_leaves_tokens_clears_the_entry() -> None:
    """A later take that found the bucket not empty removes the refusal at once."""
    cache = RecentRefusals()
    cache.note("send", "d1", now=0.0, wait=5.0)
    cache.note("send", "d1", now=1.0, wait=None)
    assert cache.blocked_for("send", "d1", now=1.0) is None


def test_the_cache_is_bounded_forgetting_the_oldest_note() -> None:
    """Past max_keys entries, the least recently noted goes."""
    cache = RecentRefusals(max_keys=2)
    for n in range(3):
        cache.note("send", f"d{n}", now=0.0, wait=10.0)
    assert len(cache) == 2
    assert cache.blocked_for("send", "d0", now=1.0) is None
    assert cache.blocked_for("send", "d2", now=1.0) == 9.0


# --- the unavailability table --------------------------------------------------------


def test_every_limit_relay_defines_has_a_decided_unavailability_mode() -> None:
    """A new limit cannot ship without someone choosing open or closed for it."""
    defined = policies(Config())
    assert set(FAIL_MODES) == set(defined.rates) | set(defined.lockouts) | set(defined.places)


def test_logging_in_fails_closed_and_connected_clients_fail_open() -> None:
    """The policy in docs/security.md, as the code has it."""
    closed = {
        names.LOGIN,
        names.REGISTER,
        names.GUARDED_LOGIN,
        names.LOGIN_FAILURES,
        names.LOGIN_FAILURES_USER,
    }
    for name, mode in FAIL_MODES.items():
        assert mode is (FailMode.CLOSED if name in closed else FailMode.OPEN), name


def test_a_limit_nobody_decided_fails_closed() -> None:
    """An unknown name is refused rather than let through."""
    assert fail_mode("something_new") is FailMode.CLOSED


def test_every_per_ip_limit_has_a_per_user_companion() -> None:
    """Handshakes per IP and per user; logins per IP and failures per username; sends per
    device and per user: a botnet's many sources still meet a per-account ceiling."""
    defined = policies(Config())
    for per_source, per_user in (
        (names.HANDSHAKE, names.HANDSHAKE_USER),
        (names.SEND, names.SEND_USER),
    ):
        assert per_source in defined.rates and per_user in defined.rates
    assert names.LOGIN in defined.rates and names.LOGIN_FAILURES_USER in defined.lockouts
