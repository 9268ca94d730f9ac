"""Hypercorn serving the app behind relay's own accept loop, with a shutdown trigger.

``hypercorn.trio.serve`` accepts every socket it is offered and keeps it as
long as the client likes. relay accepts itself (:func:`relay.net.serve_admitted`:
a cap per source IP and in total, canned refusals before any parsing) and
hands each admitted socket to Hypercorn's own per-connection server, with
its read and keep-alive timeouts set. This mirrors
``hypercorn.trio.run.worker_serve`` (lifespan, worker context, graceful
shutdown) and uses its ``TCPServer``, ``Lifespan`` and ``WorkerContext``;
the Hypercorn version is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from ..net import (
    Admission,
    ConnectionSlots,
    Ticket,
    Turnaway,
    canned_response,
    open_listeners,
    serve_admitted,
)
from ..obs import LogSampler
from ..services import Services
from ._admin import LiveView, create_admin_app
from ._app import create_app

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_REFUSALS = {
    "source_full": (429, "too_many_connections", "too many connections from your address"),
    "total_full": (503, "overloaded", "the server is at its connection limit; retry later"),
}


class _TCPServer(TCPServer):
    """Hypercorn's per-connection server, minus one wait.

    When the client hangs up, Hypercorn's reader ends but the connection's
    keep-alive timer task keeps its task group (and the socket, in
    CLOSE-WAIT) alive for the rest of ``keep_alive_timeout``: short-lived
    clients would pile their sockets up against the per-IP cap. Nothing more
    can arrive, so the timer is stopped as soon as reading ends.
    """

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            await self.idle_task.stop()


def hypercorn_config(services: Services) -> HyperConfig:
    http = services.config.http
    hyper = HyperConfig()
    hyper.bind = [f"{http.host}:{http.port}"]
    hyper.accesslog = None  # request lines carry query strings; ours are structured
    hyper.errorlog = logging.getLogger("hypercorn.error")  # JSON, via obs
    hyper.graceful_timeout = http.graceful_timeout
    hyper.include_server_header = False
    hyper.h11_max_incomplete_size = 16 * 1024
    # A silent client is hung up on: mid-request (read_timeout) or between
    # requests (keep_alive_timeout). Without these a socket is held for ever.
    hyper.read_timeout = int(http.idle_timeout)
    hyper.keep_alive_timeout = http.idle_timeout
    return hyper


def refusal_answer(reason: str, retry_after: float) -> bytes:
    """The canned JSON answer for a socket turned away at accept."""
    status, code, message = _REFUSALS[reason]
    body = msgspec.json.encode({"error": code, "message": message})
    return canned_response(status, retry_after, body)


def closes_cleanly(app: ASGIApp) -> ASGIApp:
    """The ASGI *app*, with every ``send`` shielded from cancellation.

    Quart-Trio cancels a request's tasks as soon as the client disconnects
    or the response is done; when the response says ``Connection: close``
    (a 413 before the body was read), Hypercorn closes the socket from
    inside that last ``send``, and the cancellation would stop it halfway,
    leaving the socket open for ever. Sends are short (Hypercorn writes
    under its own shield already), so shielding them costs nothing.
    """

    async def shielded(scope: Any, receive: Any, send: Any) -> None:
        async def send_shielded(message: Any) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, send_shielded)

    return shielded


async def serve_http(
    services: Services,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API until *shutdown_trigger* returns.

    Supports ``nursery.start()``: reports the bound port once listening (so
    port 0 works in tests). On the trigger, stops accepting and gives
    in-flight requests ``http.graceful_timeout`` seconds.
    """
    config = services.config.http
    slots = ConnectionSlots(
        total=config.max_connections, per_source=config.max_connections_per_ip
    )
    await serve_app(
        services,
        create_app(services),
        name="http",
        host=config.host,
        port=config.port,
        admission=Admission([(services.sockets, 1.0), (slots, 1.0)], answer=refusal_answer),
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


async def serve_admin(
    services: Services,
    live: LiveView,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin API (``[admin]``) until *shutdown_trigger* returns."""
    admin = services.config.admin
    slots = ConnectionSlots(total=64, per_source=16)  # operators, not the public
    await serve_app(
        services,
        create_admin_app(services, live),
        name="admin",
        host=admin.host,
        port=admin.port,
        admission=Admission([(services.sockets, 1.0), (slots, 1.0)], answer=refusal_answer),
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


async def serve_app(
    services: Services,
    asgi_app: ASGIApp,
    *,
    name: str,
    host: str,
    port: int,
    admission: Admission,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *asgi_app* on (*host*, *port*) through *admission*; see :func:`serve_http`."""
    config = services.config.http
    hyper = hypercorn_config(services)
    app = wrap_app(closes_cleanly(asgi_app), hyper.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    listeners = await open_listeners(
        host, port, reuse_port=services.config.server.reuse_port, server=name
    )
    sampler = LogSampler(services.clock)

    def turned_away(source: str, turnaway: Turnaway) -> None:
        services.metrics.connections_refused.labels(name, turnaway.reason).inc()
        sampler.warn(
            services.log, f"ratelimit.{name}_connections", source, reason=turnaway.reason
        )

    async def handle(stream: trio.SocketStream, ticket: Ticket) -> None:
        await _TCPServer(app, hyper, context, ConnectionState({}), stream)  # type: ignore[arg-type]

    lifespan = Lifespan(app, hyper, {})
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                await accepting.start(
                    lambda task_status: serve_admitted(
                        listeners,
                        admission,
                        handle,
                        handler_nursery=connections,
                        on_turnaway=turned_away,
                        on_out_of_descriptors=lambda: services.log.error("net.out_of_descriptors"),
                        on_handler_error=lambda source, exc: sampler.error(
                            services.log, f"{name}.connection_error", source, exc_info=exc
                        ),
                        task_status=task_status,
                    )
                )
                task_status.started(listeners[0].socket.getsockname()[1])
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            await context.terminated.set()  # keep-alive connections close after this request
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
