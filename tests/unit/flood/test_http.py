"""Spec for flood's HTTP client side (h11): responses parsed from bytes, requests framed."""

from __future__ import annotations

import pytest

from relay.flood._http import HttpError, ResponseReader, parse_response


def test_a_body_with_content_length() -> None:
    """A Content-Length body is read whole; its JSON error code is exposed."""
    response = parse_response(
        b'HTTP/1.1 429 \r\nRetry-After: 7\r\nContent-Length: 24\r\n\r\n{"error":"rate_limited"}'
    )
    assert response.status == 429
    assert response.error_code() == "rate_limited"


def test_retry_after_is_read_in_seconds() -> None:
    """Retry-After is a number of seconds; absent, it is None."""
    assert parse_response(b"HTTP/1.1 429 \r\nRetry-After: 7\r\n\r\n").retry_after() == 7.0
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").retry_after() is None


def test_a_chunked_body_is_joined() -> None:
    """A chunked body is reassembled from its chunks."""
    response = parse_response(
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
    )
    assert response.json() == {"a": 1}


def test_a_body_without_length_runs_to_the_close() -> None:
    """With neither Content-Length nor chunking, the body ends when the server hangs up."""
    assert parse_response(b"HTTP/1.1 200 OK\r\n\r\nhello").body == b"hello"


def test_no_content_has_no_body() -> None:
    """A 204 has an empty body, whose JSON is None."""
    empty = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (empty.status, empty.body, empty.json()) == (204, b"", None)


def test_header_names_are_lower_case() -> None:
    """Header names are looked up in lower case; a repeated header keeps its last value."""
    response = parse_response(b"HTTP/1.1 204 \r\nX-Thing: a\r\nX-THING: b\r\n\r\n")
    assert response.headers["x-thing"] == "b"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"nonsense\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 9\r\n\r\n{}",
        b"",
    ],
    ids=["head-cut", "garbage", "body-cut", "nothing"],
)
def test_a_bad_or_cut_response_is_an_http_error(data: bytes) -> None:
    """Garbage, or a response cut short by the hang-up, raises HttpError."""
    with pytest.raises(HttpError):
        parse_response(data)


def test_an_upgrade_is_complete_at_its_101() -> None:
    """A 101 answers an upgrade request at its head; what follows is not HTTP."""
    reader = ResponseReader()
    reader.start("GET", "/ws", [("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
    response = reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x88")
    assert response is not None
    assert response.status == 101


def test_a_response_arrives_in_pieces() -> None:
    """The reader waits (None) until the response is whole."""
    reader = ResponseReader()
    reader.start("GET", "/", [("Host", "h")])
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-") is None
    assert reader.feed(b"Length: 2\r\n\r\n{") is None
    response = reader.feed(b"}")
    assert response is not None
    assert response.json() == {}


def test_the_request_carries_its_body_length() -> None:
    """A request with a body is framed with Content-Length."""
    data = ResponseReader().start("POST", "/api/login", [("Host", "h:1")], b'{"a":1}')
    assert data.startswith(b"POST /api/login HTTP/1.1\r\n")
    assert b"content-length: 7\r\n" in data.lower()
    assert data.endswith(b'\r\n\r\n{"a":1}')
