"""Build :class:`Services` once and run both servers in one nursery."""

from __future__ import annotations

import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from .auth import AccountService, AuthService, LoginGuard
from .bus import Bus, LocalBus, open_redis_bus
from .config import Config
from .crypto import PasswordHasher, TokenService
from .http import serve_admin, serve_http
from .keys import KeyService
from .limits import Limits, MemoryLimits, RedisLimits, open_redis_limits, policies
from .net import ConnectionSlots
from .obs import Logger, Metrics, get_logger
from .services import Services
from .store import Store, open_postgres_store, open_sqlite_store
from .ws import WsServer


@dataclass(frozen=True, slots=True)
class Bound:
    """Where the servers listen (ports resolved when 0 was asked for)."""

    http_port: int
    ws_port: int
    admin_port: int | None = None  # when [admin] is enabled


DESCRIPTOR_RESERVE = 256
"""File descriptors kept back from sockets: the store, logs, threads, the odd pipe."""


def socket_budget(config: Config) -> int:
    """How many sockets the servers may hold together (``server.max_open_sockets``).

    0 means: the process's open-file limit less :data:`DESCRIPTOR_RESERVE`,
    so that a flood of connections meets a clean refusal instead of EMFILE.
    """
    if config.server.max_open_sockets:
        return config.server.max_open_sockets
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(64, soft - DESCRIPTOR_RESERVE)


@asynccontextmanager
async def open_limits(
    config: Config, clock: Callable[[], float], log: Logger, store: Store
) -> AsyncIterator[Limits]:
    """The Limits adapter chosen in ``[limits] backend``, open until exit.

    On Redis, the adapter watches Redis from a task of its own, and answers
    ``is_revoked`` from *store* while Redis is unreachable.
    """
    if config.limits.backend == "redis":

        async def revoked_in_store(session_id: str) -> bool:
            session = await store.get_session(session_id)
            return session is None or session.revoked_at is not None

        async with open_redis_limits(
            config.limits.url,
            policies(config),
            prefix=config.limits.prefix,
            log=log,
            local_clock=clock,
            revoked_in_store=revoked_in_store,
            place_ttl=config.limits.place_ttl,
        ) as limits:
            yield limits
        return
    yield MemoryLimits(policies(config), clock=clock)


@asynccontextmanager
async def open_bus(config: Config, clock: Callable[[], float], log: Logger) -> AsyncIterator[Bus]:
    """The Bus adapter chosen in ``[bus] backend``, open until exit (its tasks with it)."""
    if config.bus.backend == "redis":
        async with open_redis_bus(
            config.bus.url,
            prefix=config.bus.prefix,
            presence_ttl=config.bus.presence_ttl,
            log=log,
            clock=clock,
        ) as bus:
            yield bus
        return
    yield LocalBus()


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[Store]:
    """The Store adapter chosen in ``[store] backend``."""
    if config.store.backend == "postgres":
        async with open_postgres_store(
            config.store.dsn, pool_size=config.store.pool_size, timeout=config.store.busy_timeout
        ) as store:
            yield store
        return
    async with open_sqlite_store(
        config.store.path, config.store.synchronous, config.store.busy_timeout
    ) as store:
        yield store


@asynccontextmanager
async def open_services(
    config: Config,
    *,
    wall_clock: Callable[[], float] = time.time,
    limits_clock: Callable[[], float] = trio.current_time,
) -> AsyncIterator[Services]:
    """Build the services from *config*; close them (flushing the store) on exit.

    Requires ``config.auth.jwt_secret`` to be set (``relay serve --dev``
    fills in an ephemeral one before calling this).
    """
    if not config.auth.jwt_secret:
        raise ValueError("auth.jwt_secret is empty")
    log = get_logger("relay")
    metrics = Metrics()
    async with (
        open_store(config) as store,
        open_limits(config, limits_clock, log, store) as limits,
        open_bus(config, limits_clock, log) as bus,
    ):
        hasher = PasswordHasher(
            opslimit=config.auth.argon2_opslimit,
            memlimit=config.auth.argon2_memlimit,
            concurrency=config.auth.hash_concurrency,
        )
        tokens = TokenService(config.auth.jwt_secret, config.auth.access_token_ttl, wall_clock)
        auth = AuthService(
            config.auth, store, limits, bus, hasher, tokens, metrics, log, wall_clock, limits_clock
        )
        await auth.restore_revocations()
        if isinstance(limits, RedisLimits):  # Redis came back empty: write them again
            limits.restore_with(auth.restore_revocations)
        accounts = AccountService(
            config.auth, store, hasher, LoginGuard(limits), auth.revoker, log, wall_clock
        )
        keys = KeyService(config.keys, store, limits, bus, metrics, log, wall_clock)
        yield Services(
            config=config,
            store=store,
            limits=limits,
            hasher=hasher,
            tokens=tokens,
            auth=auth,
            accounts=accounts,
            keys=keys,
            bus=bus,
            metrics=metrics,
            log=log,
            wall_clock=wall_clock,
            clock=limits_clock,
            sockets=ConnectionSlots(total=socket_budget(config)),
        )


async def serve_services(
    services: Services,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the servers over *services* until *shutdown_trigger* returns.

    Supports ``nursery.start()``: reports the bound ports once every server
    listens. Returns when every server has drained.
    """
    ws = WsServer(services)
    # The one place events reach this process's sockets: whatever is
    # published (a stored message, a revocation, a notice) goes to them.
    services.bus.attach(ws.registry)
    try:
        async with trio.open_nursery() as nursery:
            http_port = await nursery.start(
                lambda task_status: serve_http(
                    services, shutdown_trigger=shutdown_trigger, task_status=task_status
                )
            )
            ws_port = await nursery.start(
                lambda task_status: ws.serve(
                    shutdown_trigger=shutdown_trigger, task_status=task_status
                )
            )
            admin_port = None
            if services.config.admin.enabled:
                admin_port = await nursery.start(
                    lambda task_status: serve_admin(
                        services, ws.status, shutdown_trigger=shutdown_trigger,
                        task_status=task_status,
                    )
                )
            nursery.start_soon(_sweep_expired, services, shutdown_trigger)
            services.log.info(
                "relay.listening", http_port=http_port, ws_port=ws_port, admin_port=admin_port
            )
            task_status.started(Bound(http_port=http_port, ws_port=ws_port, admin_port=admin_port))
    finally:
        services.bus.attach(None)


SWEEP_INTERVAL = 60.0


async def _sweep_expired(
    services: Services, shutdown_trigger: Callable[[], Awaitable[None]]
) -> None:
    """Drop queued messages past ``queue.ttl`` every minute, until shutdown."""
    async with trio.open_nursery() as nursery:

        async def sweep() -> None:
            while True:
                try:
                    dropped = await services.store.purge_expired(services.wall_clock())
                    if dropped:
                        services.log.info("queue.expired", dropped=dropped)
                except Exception:  # a failed sweep is retried next time
                    services.log.error("queue.sweep_failed", exc_info=True)
                await trio.sleep(SWEEP_INTERVAL)

        nursery.start_soon(sweep)
        await shutdown_trigger()
        nursery.cancel_scope.cancel()


async def run(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the services from *config* and serve until the trigger fires."""
    async with open_services(config) as services:
        await serve_services(
            services, shutdown_trigger=shutdown_trigger, task_status=task_status
        )
    get_logger("relay").info("relay.stopped")
