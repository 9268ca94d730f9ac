"""Hypercorn serving the app, under a nursery, with a shutdown trigger."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from ..services import Services
from ._app import create_app


def hypercorn_config(services: Services) -> HyperConfig:
    http = services.config.http
    hyper = HyperConfig()
    hyper.bind = [f"{http.host}:{http.port}"]
    hyper.accesslog = None  # request lines carry query strings; ours are structured
    hyper.errorlog = logging.getLogger("hypercorn.error")  # JSON, via obs
    hyper.graceful_timeout = http.graceful_timeout
    hyper.include_server_header = False
    hyper.h11_max_incomplete_size = 16 * 1024
    hyper.keep_alive_timeout = 30
    return hyper


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
    app = create_app(services)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: serve(
                app, hypercorn_config(services), shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )
        )
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
