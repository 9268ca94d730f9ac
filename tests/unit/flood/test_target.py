"""Spec for flood's safety rule: loopback targets only, unless --allow-remote."""

from __future__ import annotations

import pytest

from relay.cli import main
from relay.flood import (
    Endpoint,
    HandshakeOptions,
    IdleOptions,
    MessagesOptions,
    UnsafeTarget,
    check_target,
    parse_endpoint,
)
from relay.flood._target import auto_sources, is_loopback, parse_source_ips, resolve_loopback

LOOPBACK = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "localhost",
    "LocalHost",
    "::ffff:127.0.0.1",
]
REMOTE = [
    "10.0.0.1",
    "example.com",
    "0.0.0.0",
    "192.168.1.10",
    "8.8.8.8",
    "::",
    "2001:db8::1",
    "localhost.example.com",
    "127.0.0.1.example.com",
    "128.0.0.1",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_is_allowed(host: str) -> None:
    assert is_loopback(host)
    check_target(host, allow_remote=False)


@pytest.mark.parametrize("host", REMOTE)
def test_anything_else_is_refused_without_allow_remote(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UnsafeTarget, match="not a loopback address"):
        check_target(host, allow_remote=False)
    check_target(host, allow_remote=True)


def endpoint(host: str, scheme: str = "ws") -> Endpoint:
    return Endpoint(scheme, host, 8765, "/ws")


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com"])
def test_options_refuse_remote_targets(host: str) -> None:
    with pytest.raises(UnsafeTarget):
        HandshakeOptions(ws=endpoint(host))
    with pytest.raises(UnsafeTarget):
        MessagesOptions(http=endpoint(host, "http"), ws=endpoint("127.0.0.1"))
    with pytest.raises(UnsafeTarget):
        IdleOptions(http=endpoint("127.0.0.1", "http"), ws=endpoint(host))
    assert HandshakeOptions(ws=endpoint(host), allow_remote=True).ws.host == host


def test_options_bound_time_and_count() -> None:
    ws = endpoint("127.0.0.1")
    with pytest.raises(ValueError, match="duration"):
        HandshakeOptions(ws=ws, duration=601)
    with pytest.raises(ValueError, match="duration"):
        HandshakeOptions(ws=ws, duration=0)
    with pytest.raises(ValueError, match="count"):
        HandshakeOptions(ws=ws, count=0)
    with pytest.raises(ValueError, match="not both"):
        HandshakeOptions(ws=ws, token="t", bad_token=True)
    with pytest.raises(ValueError, match="hold"):
        IdleOptions(http=endpoint("127.0.0.1", "http"), ws=ws, hold=600.5)
    assert HandshakeOptions(ws=ws, duration=600).duration == 600


def test_parse_endpoint() -> None:
    assert parse_endpoint("ws://127.0.0.1:8765/ws", "ws") == Endpoint(
        "ws", "127.0.0.1", 8765, "/ws"
    )
    v6 = parse_endpoint("ws://[::1]:9000/ws?x=1", "ws")
    assert (v6.host, v6.authority, v6.path) == ("::1", "[::1]:9000", "/ws?x=1")
    assert parse_endpoint("http://localhost:8080/", "http") == Endpoint(
        "http", "localhost", 8080, ""
    )
    assert parse_endpoint("ws://127.0.0.1", "ws").port == 80
    for bad, scheme in [
        ("wss://127.0.0.1/ws", "ws"),
        ("https://127.0.0.1", "http"),
        ("127.0.0.1:8765", "ws"),
        ("ws://user:pw@127.0.0.1/ws", "ws"),
        ("ws://127.0.0.1:99999/ws", "ws"),
    ]:
        with pytest.raises(ValueError):
            parse_endpoint(bad, scheme)


def test_source_addresses() -> None:
    assert parse_source_ips("127.0.0.2, 127.0.0.3,", allow_remote=False) == (
        "127.0.0.2",
        "127.0.0.3",
    )
    assert parse_source_ips(None, allow_remote=False) == ()
    with pytest.raises(UnsafeTarget):
        parse_source_ips("10.0.0.2", allow_remote=False)
    assert parse_source_ips("10.0.0.2", allow_remote=True) == ("10.0.0.2",)
    with pytest.raises(ValueError, match="not an IP"):
        parse_source_ips("localhost", allow_remote=False)


def test_automatic_sources_beyond_twenty_thousand() -> None:
    assert auto_sources(20_000, "127.0.0.1") == ()
    assert auto_sources(20_001, "127.0.0.1") == ("127.0.0.1", "127.0.0.2")
    assert auto_sources(60_000, "127.0.0.1") == ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    assert auto_sources(50_000, "::1") == ()
    assert auto_sources(50_000, "localhost") == ()


async def test_localhost_must_resolve_to_loopback() -> None:
    await resolve_loopback("localhost", 80, allow_remote=False)
    await resolve_loopback("127.0.0.1", 80, allow_remote=False)
    with pytest.raises(UnsafeTarget):
        await resolve_loopback("example.com", 80, allow_remote=False)


def test_cli_refuses_remote_targets_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No config or JWT_SECRET is needed: flood is dispatched before config loading."""
    assert main(["flood", "handshake", "--ws", "ws://10.0.0.1:8765/ws"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert main(["flood", "idle", "--http", "http://example.com:8080"]) == 2
    assert main(["flood", "messages", "--source-ips", "10.1.1.1"]) == 2


def test_cli_bounds_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["flood", "handshake", "--duration", "601"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["flood", "idle", "--connections", "0"])


def test_cli_unreachable_target_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flood", "handshake", "--ws", "ws://127.0.0.1:1/ws", "--duration", "1"]) == 1
    assert "unreachable" in capsys.readouterr().err
