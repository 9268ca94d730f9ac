"""Spec for flood's hand-written wire bytes: the raw upgrade, status lines, masking."""

from __future__ import annotations

import pytest

from relay.flood._cli import masked_command
from relay.flood._target import Endpoint
from relay.flood._wire import close_frame, status_of, upgrade_request


def test_upgrade_request() -> None:
    ws = Endpoint("ws", "127.0.0.1", 8765, "/ws")
    request = upgrade_request(ws, token="T0K", origin="https://evil.example", key=bytes(16))
    head = request.decode()
    assert head.startswith("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n")
    assert "Upgrade: websocket\r\n" in head
    assert "Connection: Upgrade\r\n" in head
    assert "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n" in head
    assert "Sec-WebSocket-Version: 13\r\n" in head
    assert "Authorization: Bearer T0K\r\n" in head
    assert "Origin: https://evil.example\r\n" in head
    assert head.endswith("\r\n\r\n")
    bare = upgrade_request(ws, token=None, origin=None, key=bytes(16)).decode()
    assert "Authorization" not in bare
    assert "Origin" not in bare


def test_status_lines() -> None:
    assert status_of(b"HTTP/1.1 101 Switching Protocols") == 101
    assert status_of(b"HTTP/1.1 429 ") == 429
    assert status_of(b"HTTP/1.0 503") == 503
    for bad in (b"", b"garbage", b"HTTP/2 200", b"HTTP/1.1 abc x"):
        with pytest.raises(ValueError):
            status_of(bad)


def test_close_frame_is_masked_1000() -> None:
    assert close_frame(bytes(4)) == b"\x88\x82\x00\x00\x00\x00\x03\xe8"
    assert close_frame(b"\xff\x00\x00\x00") == b"\x88\x82\xff\x00\x00\x00\xfc\xe8"


def test_the_json_command_line_never_holds_the_token() -> None:
    argv = [
        "relay",
        "flood",
        "handshake",
        "--token",
        "eyJsecret",
        "--token=eyJother",
        "--rate",
        "5",
    ]
    assert masked_command(argv) == [
        "relay",
        "flood",
        "handshake",
        "--token",
        "<given>",
        "--token=<given>",
        "--rate",
        "5",
    ]
