"""A minimal HTTP/1.1 JSON client over Trio, for flood's account setup.

One request per connection (``Connection: close``; the client hangs up as
soon as the body is complete), so a source address can be bound per request
and nothing is pooled. Enough for the relay's JSON API (Content-Length or
chunked bodies; a body with neither is taken as empty); not a
general-purpose client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from ._target import Endpoint

MAX_RESPONSE_BYTES = 1 << 20


class HttpError(Exception):
    """The request got no parseable answer (refused, reset, timed out, garbled)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    """Lower-case names; the last value of a repeated header."""
    body: bytes

    def json(self) -> Any:
        """The body as JSON; None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def error_code(self) -> str | None:
        """The relay's ``error`` code of an error body, if any."""
        data = self.json()
        code = data.get("error") if isinstance(data, dict) else None
        return code if isinstance(code, str) else None

    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds, when present and numeric."""
        try:
            return max(0.0, float(self.headers["retry-after"]))
        except (KeyError, ValueError):
            return None


def _request_bytes(
    endpoint: Endpoint, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
) -> bytes:
    lines = [
        f"{method} {endpoint.path}{path} HTTP/1.1",
        f"Host: {endpoint.authority}",
        "Connection: close",
        "Accept: application/json",
        "User-Agent: relay-flood",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_response(data: bytes) -> HttpResponse:
    """Parse a whole HTTP/1.1 response; HttpError if garbled or incomplete."""
    response = _parse(data)
    if response is None:
        raise HttpError("incomplete response")
    return response


def _parse(data: bytes) -> HttpResponse | None:
    """The response in *data*, or None while it is still incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    status = int(parts[1])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
        if body is None:
            return None
        return HttpResponse(status, headers, body)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError("bad Content-Length") from None
    if len(rest) < length:
        return None
    return HttpResponse(status, headers, rest[:length])


def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked encoding, or None while incomplete."""
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise HttpError("bad chunk size") from None
        if size == 0:
            return bytes(out)
        if len(data) < size + 2:
            return None
        out += data[:size]
        data = data[size + 2 :]


async def request(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    local_address: str | None = None,
    timeout: float = 15.0,
) -> HttpResponse:
    """Send one request to *endpoint* and read the whole response.

    Returns any status (refusals included); raises :class:`HttpError` only
    when there is no parseable response within *timeout* seconds.
    """
    body = None if json_body is None else json.dumps(json_body).encode()
    data = _request_bytes(endpoint, method, path, body, headers or {})
    buf = bytearray()
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(
                endpoint.host, endpoint.port, local_address=local_address
            )
            async with stream:
                await stream.send_all(data)
                while (response := _parse(bytes(buf))) is None:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise HttpError(f"{method} {path}: connection closed mid-response")
                    buf += chunk
                    if len(buf) > MAX_RESPONSE_BYTES:
                        raise HttpError(f"{method} {path}: response too large")
    except trio.TooSlowError:
        raise HttpError(f"{method} {path}: no answer within {timeout:g} s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise HttpError(f"{method} {path}: {exc}") from None
    return response
