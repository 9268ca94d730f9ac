"""``relay serve``: start, say where it listens, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from typing import TypeVar

import structlog
import trio

from .. import __version__
from ..app import Bound, run
from ..config import Config
from ..net import PortInUse
from ..obs import configure_logging, get_logger
from ..store import StoreError
from ._describe import describe_bus, describe_limits, describe_store, describe_store_problem
from ._workers import (
    supervise,
    supervisor_pid,
    watch_supervisor,
    why_not_workers,
    worker_index,
)

EXIT_FAILED, EXIT_USAGE = 1, 2
E = TypeVar("E", bound=BaseException)

PORT_KEYS = {
    "http": ("http.port", "RELAY_HTTP_PORT"),
    "ws": ("ws.port", "RELAY_WS_PORT"),
    "admin": ("admin.port", "RELAY_ADMIN_PORT"),
}


def serve(
    config: Config, *, dev: bool, workers: int | None = None, config_path: str | None = None
) -> int:
    """Run the relay until a signal; 0 after a clean stop, 2 if it cannot start.

    With more than one worker (``--workers`` or ``[server] workers``) this
    process supervises that many relay processes instead (see ``_workers``).
    """
    configure_logging(config.log.level, config.log.format)
    log = get_logger("relay")
    index = worker_index()
    if index is not None:
        structlog.contextvars.bind_contextvars(worker=index)
    count = workers if workers is not None else config.server.workers
    if count < 1:
        print("relay: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    refusal = why_not_workers(config, count)
    if refusal is not None:
        print(f"relay: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    if not config.auth.jwt_secret:
        if not dev:
            print(
                "relay: JWT_SECRET is not set: set it (at least 32 bytes) or run "
                "`relay serve --dev` for an ephemeral one",
                file=sys.stderr,
            )
            return EXIT_USAGE
        config = config.replace(auth__jwt_secret=secrets.token_urlsafe(48))
        log.warning("relay.dev_secret", detail="ephemeral JWT secret; tokens die with the process")
    if count > 1:
        # The workers must sign and check tokens alike: the one secret goes to all.
        env = {**os.environ, "JWT_SECRET": str(config.auth.jwt_secret)}
        return supervise(config_path or os.environ.get("RELAY_CONFIG"), env, count)
    try:
        trio.run(_serve_until_signal, config, dev)
    except BaseException as exc:  # an ExceptionGroup from the servers' nursery
        store_error = _found(exc, StoreError)
        if store_error is not None:
            detail = getattr(store_error, "detail", None) or str(store_error)
            problem = describe_store_problem(config, detail)
            print(f"relay: cannot open the store: {problem}", file=sys.stderr)
            return EXIT_FAILED
        taken = _found(exc, PortInUse)
        if taken is None:
            raise
        key, var = PORT_KEYS.get(taken.server, ("its port", "its variable"))
        print(
            f"relay: port {taken.port} ({taken.server}) on {taken.host} is already in use; "
            f"choose another with {key} in relay.toml or {var}=…",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def _found(exc: BaseException, kind: type[E]) -> E | None:
    """*exc* itself if it is a *kind*, or the first *kind* inside its groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _found(inner, kind)
            if found is not None:
                return found
    return None


async def _serve_until_signal(config: Config, dev: bool) -> None:
    stop = trio.Event()
    log = get_logger("relay")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info("relay.shutdown", signal=signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(watch)
            supervisor = supervisor_pid()
            if supervisor is not None:
                nursery.start_soon(watch_supervisor, supervisor, stop, log)

            async def serve_then_stop_watching(task_status: trio.TaskStatus[Bound]) -> None:
                await run(config, shutdown_trigger=stop.wait, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: the watchers have nothing left to do

            bound: Bound = await nursery.start(serve_then_stop_watching)
            if sys.stderr.isatty():
                print(banner(config, bound, dev), file=sys.stderr, flush=True)
            await stop.wait()
        # The nursery returns once run() has drained both servers.


def banner(config: Config, bound: Bound, dev: bool) -> str:
    """Where the relay listens and what it opened, in plain words (for a terminal)."""
    http = f"http://{_host(config.http.host)}:{bound.http_port}"
    lines = [
        f"relay {__version__} is running.",
        f"  HTTP API   {http}   (try: curl {http}/healthz)",
        f"  WebSocket  ws://{_host(config.ws.host)}:{bound.ws_port}/ws",
    ]
    if bound.admin_port is not None:
        lines.append(
            f"  Admin      http://{_host(config.admin.host)}:{bound.admin_port}/admin/status"
        )
    lines.append(f"  Store      {describe_store(config)}")
    lines.append(f"  Bus        {describe_bus(config)}")
    lines.append(f"  Limits     {describe_limits(config)}")
    if dev:
        lines.append(
            "  Dev mode   --dev made a random JWT secret for this run: every token dies "
            "with the process. Set JWT_SECRET (32+ bytes) for real use."
        )
    lines.append("Logs follow. Ctrl-C stops (open connections are closed with 1001 first).")
    return "\n".join(lines)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
