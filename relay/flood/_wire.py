"""The few WebSocket handshake bytes flood writes and reads by hand (sans-I/O, stdlib only).

Used by the handshake generator's hot path (:mod:`relay.flood._raw`), where
a full HTTP parser per attempt would cost a noticeable share of the rate:
it needs only the status code of the answer, so :func:`status_of` reads the
status line and nothing else. Everything else flood reads over HTTP goes
through h11 (:mod:`relay.flood._http`).
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._target import Endpoint

BAD_TOKEN = "flood.not-a-valid.token"  # noqa: S105 (deliberately invalid, not a secret)
PROBE_PATH = "/relay-flood-probe"


def upgrade_request(ws: Endpoint, *, token: str | None, origin: str | None, key: bytes) -> bytes:
    """The HTTP/1.1 upgrade request for *ws* (Bearer *token*, *origin*, 16-byte *key*)."""
    lines = [
        f"GET {ws.path} HTTP/1.1",
        f"Host: {ws.authority}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(key).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; ValueError if it is not one."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP status line")
    return int(parts[1])


def close_frame(mask: bytes) -> bytes:
    """A client (masked) WebSocket close frame with code 1000 and 4-byte *mask*."""
    payload = (1000).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + masked


def close_frame_bytes() -> bytes:
    """A close frame (1000) with a fresh random mask."""
    return close_frame(os.urandom(4))
