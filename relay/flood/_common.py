"""What every flood mode shares: limits, errors, the start-up checks, WS opening."""

from __future__ import annotations

import base64
import contextlib
import errno
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto.utilities import LocalProtocolError

from ._args import MAX_SECONDS
from ._http import HttpError, ResponseReader, exchange, request
from ._target import Endpoint, resolve_loopback
from ._wire import PROBE_PATH, close_frame_bytes

ProgressLine = Callable[[], str]
"""Returns the live progress text; called about twice a second."""


class FloodError(Exception):
    """A flood run could not start; ``str()`` is one line for the operator."""


class TargetUnreachable(FloodError):
    """The target did not answer at start."""


def check_seconds(name: str, value: float) -> float:
    """*value* if it is in (0, MAX_SECONDS]; ValueError otherwise."""
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(f"{name} must be in (0, {MAX_SECONDS:g}] seconds, not {value:g}")
    return value


async def preflight(
    *,
    ws: Endpoint,
    http: Endpoint | None,
    allow_remote: bool,
    source: str | None,
    probe_ws: bool = True,
) -> None:
    """Check the targets before the run: loopback rule, then reachability.

    Raises :class:`~relay.flood.UnsafeTarget` for a refused target and
    :class:`TargetUnreachable` when the HTTP API does not answer
    ``GET /healthz`` with 200 or (with *probe_ws*) the WS server does not
    answer one handshake (:func:`probe`; any status will do).
    """
    targets = [ws] + ([http] if http is not None else [])
    for endpoint in targets:
        try:
            await resolve_loopback(endpoint.host, endpoint.port, allow_remote=allow_remote)
        except OSError as exc:
            raise TargetUnreachable(f"cannot resolve {endpoint.host!r}: {exc}") from None
    if probe_ws:
        try:
            await probe(ws, local_address=source)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, HttpError) as exc:
            reason = error_kind(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            raise TargetUnreachable(f"{ws.url()} is unreachable: {reason}") from None
    if http is not None:
        try:
            response = await request(http, "GET", "/healthz", local_address=source, timeout=5)
        except HttpError as exc:
            raise TargetUnreachable(f"{http.url()} is unreachable: {exc}") from None
        if response.status != 200:
            raise TargetUnreachable(f"{http.url()}/healthz answered {response.status}")


async def probe(ws: Endpoint, *, local_address: str | None, timeout: float = 5.0) -> int:
    """One handshake to :data:`~relay.flood._wire.PROBE_PATH` on *ws*'s server: its status.

    Proves the WebSocket server is there at the cost of one handshake (one
    token of the relay's per-IP bucket); the relay answers 404 without a log
    line. A bare TCP connect or a plain GET would cost less to send but
    would each keep a server task waiting for its handshake timeout. The
    answer is parsed by h11. Raises OSError, trio.TooSlowError or
    :class:`~relay.flood._http.HttpError` when there is no answer.
    """
    reader = ResponseReader()
    key = base64.b64encode(os.urandom(16)).decode()
    request_bytes = reader.start(
        "GET",
        PROBE_PATH,
        [
            ("Host", ws.authority),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(ws.host, ws.port, local_address=local_address)
        async with stream:
            status = (await exchange(stream, reader, request_bytes)).status
            if status == 101:  # best effort: the server may be gone
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await stream.send_all(close_frame_bytes())
    return status


@dataclass(frozen=True, slots=True)
class WsFailure:
    """Why a WebSocket did not open: ``kind`` is the HTTP status as text
    (``"429"``, ``"503"``...), ``timeout``, ``closed`` or an errno name."""

    kind: str
    retry_after: float | None = None


WsBody = Callable[[WebSocketConnection], Awaitable[None]]


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


async def ws_session(
    ws: Endpoint,
    body: WsBody,
    *,
    token: str | None,
    local_address: str | None,
    handshake_timeout: float = 10.0,
    queue_size: int = 1,
) -> WsFailure | None:
    """Open one WebSocket (Bearer *token*, from *local_address*), run *body*, close.

    Returns None once the handshake succeeded (whatever *body* then did;
    it should catch ``ConnectionClosed`` itself), or the :class:`WsFailure`
    of the handshake. The close after *body* is bounded (2 s) and happens
    even when the caller is cancelled, so cancelling a run closes politely.
    """
    failure: WsFailure | None = None
    opened = False
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token is not None else []
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(handshake_timeout):
                stream = await trio.open_tcp_stream(ws.host, ws.port, local_address=local_address)
                connection = await wrap_client_stream(
                    nursery,
                    stream,
                    ws.authority,
                    ws.path,
                    extra_headers=headers,
                    message_queue_size=queue_size,
                )
            opened = True
            try:
                await body(connection)
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    await connection.aclose()
                nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        rejected = group.exceptions[0]
        assert isinstance(rejected, ConnectionRejected)
        failure = WsFailure(str(rejected.status_code), _retry_after(rejected.headers))
    except* trio.TooSlowError:
        failure = WsFailure("timeout")
    except* (HandshakeError, ConnectionClosed, trio.BrokenResourceError, LocalProtocolError):
        # LocalProtocolError: trio-websocket's client reader answers a ping
        # that arrives while it is closing, which wsproto refuses ("Pong ...
        # LOCAL_CLOSING"); at 10k+ connections the relay's heartbeats make it
        # likely. The connection was ending anyway: count it as closed.
        failure = WsFailure("closed")
    except* OSError as group:
        failure = WsFailure(error_kind(group.exceptions[0]))
    if opened:
        return None
    return failure or WsFailure("closed")


def error_kind(exc: BaseException) -> str:
    """A short label for a connection error (its errno name when there is one)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return errno.errorcode.get(seen.errno, f"errno{seen.errno}")
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
            continue
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def params_json(values: dict[str, Any], secret: Sequence[str] = ()) -> dict[str, Any]:
    """*values* for the JSON report, with each *secret* key masked."""
    return {k: ("<given>" if k in secret and v else v) for k, v in values.items()}
