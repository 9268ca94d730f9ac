"""API errors as ``{"error": code, "message": text}``, the one map from domain
refusals to HTTP statuses, and body decoding."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from quart import request
from quart_trio.wrappers.response import TrioResponse as Response

from ..errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    Refused,
    TooMany,
    Unavailable,
)
from ..limits import retry_after_header

T = TypeVar("T")

_JSON = msgspec.json.Encoder()


class ApiError(Exception):
    """Answer the request with *status* and ``{"error", "message"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = retry_after_header(retry_after)


_STATUS: tuple[tuple[type[Refused], int], ...] = (
    (InvalidInput, 400),
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooMany, 429),
    (Unavailable, 503),
)


def api_error(refusal: Refused) -> ApiError:
    """The HTTP answer to a domain refusal: its kind decides the status."""
    status = next((code for kind, code in _STATUS if isinstance(refusal, kind)), 400)
    bearer = status == 401 and refusal.code == "invalid_token"
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return ApiError(status, refusal.code, refusal.message, refusal.retry_after, headers)


def json_response(payload: object, status: int = 200) -> Response:
    return Response(_JSON.encode(payload), status=status, content_type="application/json")


def error_response(error: ApiError) -> Response:
    response = json_response({"error": error.code, "message": error.message}, error.status)
    response.headers.update(error.headers)
    return response


async def read_body(model: type[T]) -> T:
    """Decode the request body as JSON into *model*, or raise ApiError(400/413).

    The size cap is enforced by Quart (``MAX_CONTENT_LENGTH``) while the body
    streams in, before anything is buffered past it.
    """
    data = await request.get_data(cache=False)
    assert isinstance(data, bytes)
    try:
        return msgspec.json.decode(data, type=model)
    except msgspec.ValidationError as exc:
        # A type error may come before a syntax error or a nesting bomb further on.
        _check_syntax(data)
        raise ApiError(400, "invalid_request", f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise _malformed() from None
    except RecursionError:
        raise _too_deep() from None


def _malformed() -> ApiError:
    return ApiError(400, "malformed_json", "the body is not valid UTF-8 JSON")


def _too_deep() -> ApiError:
    return ApiError(400, "invalid_json", "the body's JSON is nested too deeply")


def _check_syntax(data: bytes) -> None:
    """Raise malformed_json or invalid_json unless *data* is plain well-formed JSON."""
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise _malformed() from None
    except RecursionError:
        raise _too_deep() from None
