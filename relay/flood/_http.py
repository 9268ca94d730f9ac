"""A minimal HTTP/1.1 client over Trio, for flood's account setup and start-up checks.

One request per connection (``Connection: close``; the client hangs up as
soon as the response is complete), so a source address can be bound per
request and nothing is pooled. h11 frames the request and parses the
response (Content-Length, chunked, or read-until-close bodies). The one
place flood reads HTTP by hand is the handshake generator's hot path
(:func:`relay.flood._wire.status_of`), where only the status code matters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h11
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


def _headers(pairs: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in pairs}


class ResponseReader:
    """The client side of one HTTP/1.1 exchange, on h11: bytes in, one response out.

    :meth:`start` gives the request's bytes; :meth:`feed` takes what the
    server sent and returns the complete :class:`HttpResponse` once it is
    there. A ``101`` (an accepted upgrade) completes the response at its
    head; other ``1xx`` answers are skipped.
    """

    def __init__(self, *, limit: int = MAX_RESPONSE_BYTES) -> None:
        self._conn = h11.Connection(our_role=h11.CLIENT)
        self._status: int | None = None
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._limit = limit

    def start(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None = None,
    ) -> bytes:
        """The bytes of the request (*headers* must include ``Host``)."""
        if body is not None:
            headers = [*headers, ("Content-Length", str(len(body)))]
        try:
            data = self._conn.send(h11.Request(method=method, target=target, headers=list(headers)))
            if body:
                data += self._conn.send(h11.Data(data=body)) or b""
            return data + (self._conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send this request: {exc}") from None

    def feed(self, data: bytes | bytearray) -> HttpResponse | None:
        """Take *data* (``b""``: the server hung up); the response once complete.

        Raises :class:`HttpError` for a malformed, oversized or truncated
        response (a hang-up before the end counts as truncated).
        """
        try:
            self._conn.receive_data(bytes(data))
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        return HttpResponse(101, _headers(event.headers), b"")
                elif isinstance(event, h11.Response):
                    self._status = event.status_code
                    self._headers = _headers(event.headers)
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > self._limit:
                        raise HttpError("response too large")
                elif isinstance(event, h11.EndOfMessage):
                    assert self._status is not None
                    return HttpResponse(self._status, self._headers, bytes(self._body))
                elif isinstance(event, h11.ConnectionClosed):
                    raise HttpError("connection closed before a response")
                else:  # h11.PAUSED and anything else: nothing more to read
                    raise HttpError(f"unexpected {type(event).__name__}")
        except h11.RemoteProtocolError as exc:
            raise HttpError(f"bad response: {exc}") from None


def parse_response(data: bytes, *, method: str = "GET") -> HttpResponse:
    """Parse *data*, a whole response to a *method* request; HttpError if bad or incomplete."""
    reader = ResponseReader()
    reader.start(method, "/", [("Host", "flood")])
    response = reader.feed(data)
    if response is None:
        response = reader.feed(b"")  # the end of *data* is the server hanging up
    if response is None:
        raise HttpError("incomplete response")
    return response


async def exchange(
    stream: trio.abc.Stream, reader: ResponseReader, request_bytes: bytes
) -> HttpResponse:
    """Send *request_bytes* on *stream*, read until *reader* has the response.

    Raises :class:`HttpError` when there is none (see
    :meth:`ResponseReader.feed`); ``OSError``/``trio.BrokenResourceError``
    propagate.
    """
    await stream.send_all(request_bytes)
    while True:
        chunk = await stream.receive_some(65536)
        response = reader.feed(chunk)
        if response is not None:
            return response
        if not chunk:
            raise HttpError("connection closed mid-response")


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
    fields = [
        ("Host", endpoint.authority),
        ("Connection", "close"),
        ("Accept", "application/json"),
        ("User-Agent", "relay-flood"),
    ]
    if body is not None:
        fields.append(("Content-Type", "application/json"))
    fields += list((headers or {}).items())
    reader = ResponseReader()
    data = reader.start(method, f"{endpoint.path}{path}", fields, body)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(
                endpoint.host, endpoint.port, local_address=local_address
            )
            async with stream:
                return await exchange(stream, reader, data)
    except HttpError as exc:
        raise HttpError(f"{method} {path}: {exc}") from None
    except trio.TooSlowError:
        raise HttpError(f"{method} {path}: no answer within {timeout:g} s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise HttpError(f"{method} {path}: {exc}") from None
