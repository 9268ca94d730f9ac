"""source_of: the unit per-source limits count."""

from __future__ import annotations

import pytest

from relay.net import source_of


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::1", "::/64"),
        ("not-an-ip" * 20, ("not-an-ip" * 20)[:64]),
    ],
)
def test_source_of(address: str, source: str) -> None:
    """IPv4 as is; IPv6 by /64 (one host's allocation); v4-mapped as v4; anything else cut."""
    assert source_of(address) == source
