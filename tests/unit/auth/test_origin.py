"""The Origin allowlist shared by the WebSocket gate and CORS."""

from __future__ import annotations

import pytest

from relay.auth import origin_allowed


@pytest.mark.parametrize(
    "origin",
    ["http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://[::1]:5173"],
)
def test_default_admits_local_origins_on_any_port(origin: str) -> None:
    """With no allowlist, localhost and loopback on http(s) and any port are admitted."""
    assert origin_allowed(origin, ())


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "null",
        "file://",
        "ws://localhost",
        "http://localhost/path",
        "http://user@localhost",
        "",
        "http://localhost:notaport",
    ],
)
def test_default_refuses_everything_else(origin: str) -> None:
    """Other hosts, look-alikes, 'null' and malformed origins are refused."""
    assert not origin_allowed(origin, ())


def test_configured_list_replaces_the_default() -> None:
    """With an allowlist, only its entries match: localhost is no longer admitted."""
    allowed = ("https://chat.example.com",)
    assert origin_allowed("https://chat.example.com", allowed)
    assert origin_allowed("HTTPS://Chat.Example.com", allowed)
    assert not origin_allowed("http://localhost:3000", allowed)
    assert not origin_allowed("http://chat.example.com", allowed)
    assert not origin_allowed("https://chat.example.com:8443", allowed)
