"""The WebSocket server: admission at accept, the handshake handler, and shutdown.

Sockets are accepted by :func:`relay.net.serve_admitted`: a source whose
handshake bucket is empty is shed with a canned 429, and every socket holds
a slot of the process's socket budget and a *pending* slot (at most
``ws.max_pending_per_ip`` per IP, ``ws.max_pending`` in all) until it has
authenticated, so silent or slow sockets from one host cannot pile up.
Once the token is good, the connection takes a place of this process
(:meth:`ConnectionRegistry.reserve`, atomic, before any await) and one of
its user's places (``ws_connections_user`` in the Limits port: shared by
every process on Redis), and holds both until it ends.

Shutdown order (after websockets' documented one): stop accepting → close
sockets that have not sent their request → answer handshakes still in
progress with 503 → close open connections with 1001 →
wait for their handlers (at most ``ws.shutdown_grace``) → store what the
pipeline still holds → return.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import Any

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from ..crypto import AccessClaims, InvalidToken
from ..limits import names
from ..net import (
    Admission,
    ConnectionSlots,
    Full,
    Ticket,
    Turnaway,
    open_listeners,
    serve_admitted,
)
from ..obs import LogSampler
from ..services import Services
from ..store import StoreUnavailable
from ._connection import Connection, ConnectionContext, FrameCounters
from ._frames import AuthFrame, FrameError, decode_frame
from ._gate import HandshakeGate, Refusal
from ._heartbeats import Heartbeats
from ._internals import close_and_release, drop_rejected, serve_connection
from ._life import Close
from ._pipeline import DeliveryPipeline
from ._registry import ConnectionRegistry

SHUTTING_DOWN = Close(1001, "server shutting down")
USERNAME_CACHE = 100_000  # user ids whose username is remembered

_TICKET: ContextVar[Ticket] = ContextVar("ws_ticket")
"""The accept-time ticket of the connection this task serves (same task as the handler)."""
_BEFORE_REQUEST: ContextVar[trio.CancelScope] = ContextVar("ws_before_request")
"""The scope of this task's socket, cancelled at shutdown if no request came yet."""


class WsServer:
    """Owns the gate, the registry and the pipeline of one WS endpoint."""

    def __init__(self, services: Services) -> None:
        config = services.config.ws
        self._services = services
        self._config = config
        self._log = services.log
        self._metrics = services.metrics
        self.registry = ConnectionRegistry(services.metrics, config)
        self.pending = ConnectionSlots(
            total=config.max_pending, per_source=config.max_pending_per_ip
        )
        self.gate = HandshakeGate(
            config, services.limits, services.auth, services.metrics, services.log, services.clock
        )
        self.pipeline = DeliveryPipeline(
            services.config.queue,
            services.config.store,
            services.store,
            services.bus,
            services.metrics,
            services.log,
            services.wall_clock,
        )
        metrics = services.metrics
        metrics.pipeline_queue.set_function(self.pipeline.depth)
        metrics.outbound_queued.set_function(lambda: sum(self.registry.queue_depths()))
        metrics.outbound_queue_max.set_function(
            lambda: max(self.registry.queue_depths(), default=0)
        )
        self.heartbeats = Heartbeats()
        self._errors = LogSampler(services.clock)  # one traceback per IP per 10 s
        self._shed_count = services.metrics.ws_handshakes.labels("rate_limited")
        self._usernames: OrderedDict[str, str] = OrderedDict()
        self._before_request: set[trio.CancelScope] = set()
        self._ctx = ConnectionContext(
            config=config,
            store=services.store,
            auth=services.auth,
            pipeline=self.pipeline,
            heartbeats=self.heartbeats,
            limits=services.limits,
            metrics=services.metrics,
            log=services.log,
            clock=services.clock,
            wall_clock=services.wall_clock,
            counters=FrameCounters(services.metrics),
            sampler=LogSampler(services.clock),
        )

    async def serve(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until *shutdown_trigger* returns, then drain (see module doc).

        Supports ``nursery.start()``: reports the bound port once listening.
        """
        config = self._config
        reuse_port = self._services.config.server.reuse_port
        listeners = await open_listeners(
            config.host, config.port, reuse_port=reuse_port, server="ws"
        )
        admission = Admission(
            [(self._services.sockets, 1.0), (self.pending, 1.0)], shed=self._shed_check
        )
        async with trio.open_nursery() as owner:
            await owner.start(self.pipeline.run)
            async with trio.open_nursery() as timers:
                await timers.start(self.heartbeats.run)
                async with trio.open_nursery() as handlers:
                    server = WebSocketServer(
                        self._handle,
                        listeners,  # not served by it: relay.net accepts and hands sockets over
                        handler_nursery=handlers,
                        message_queue_size=4,
                        max_message_size=config.max_frame_bytes,
                        connect_timeout=config.handshake_timeout,
                        disconnect_timeout=2,
                    )

                    async def handle(stream: trio.SocketStream, ticket: Ticket) -> None:
                        _TICKET.set(ticket)
                        scope = trio.CancelScope()
                        _BEFORE_REQUEST.set(scope)
                        self._before_request.add(scope)
                        try:
                            with scope:
                                await serve_connection(server, stream)
                        finally:
                            self._before_request.discard(scope)

                    async with trio.open_nursery() as accepting:
                        await accepting.start(
                            lambda task_status: serve_admitted(
                                listeners,
                                admission,
                                handle,
                                handler_nursery=handlers,
                                on_turnaway=self._on_turnaway,
                                on_out_of_descriptors=lambda: self._log.error(
                                    "net.out_of_descriptors"
                                ),
                                on_handler_error=self._on_handler_error,
                                task_status=task_status,
                            )
                        )
                        task_status.started(listeners[0].socket.getsockname()[1])
                        await shutdown_trigger()
                        self._log.info("ws.shutdown", connections=len(self.registry))
                        self.gate.shutting_down = True
                        accepting.cancel_scope.cancel()
                    # A socket that has not sent its request yet has nothing to
                    # lose: closed now, not after ws.shutdown_grace (a slowloris
                    # must not delay every shutdown). A request read in the very
                    # instant before its handler starts is dropped, not answered
                    # 503: its client retries either way.
                    for scope in tuple(self._before_request):
                        scope.cancel()
                    for listener in listeners:
                        await listener.aclose()
                    self.registry.close_all(SHUTTING_DOWN)
                    handlers.cancel_scope.deadline = trio.current_time() + config.shutdown_grace
                timers.cancel_scope.cancel()  # every connection is gone
            self.pipeline.close()  # the owner nursery now waits for the last commit

    def status(self) -> dict[str, Any]:
        """The live figures an operator asks for (``GET /admin/status``)."""
        depths = self.registry.queue_depths()
        return {
            "connections": {
                "total": len(self.registry),
                "pending": self.pending.used,
                "top_users": [
                    {"user_id": user, "connections": n} for user, n in self.registry.top_users(20)
                ],
            },
            "queues": {
                "pipeline": self.pipeline.depth(),
                "outbound_total": sum(depths),
                "outbound_max": max(depths, default=0),
            },
        }

    def _shed_check(self, ip: str) -> float | None:
        return self._services.limits.blocked_for(names.HANDSHAKE, ip)

    def _on_handler_error(self, ip: str, exc: Exception) -> None:
        self._errors.error(self._log, "ws.connection_error", ip, exc_info=exc)

    def _on_turnaway(self, ip: str, turnaway: Turnaway) -> None:
        if turnaway.reason == "shed":
            # A flood's path, thousands of times a second: a counter and one
            # dict lookup, the log line built only when one is due (each
            # microsecond here is a few hundred refusals a second less).
            self._shed_count.inc()
            suppressed = self.gate.sampler.due("ratelimit.handshake", ip)
            if suppressed is not None:
                self._log.warning(
                    "ratelimit.handshake",
                    ip=ip,
                    suppressed=suppressed,
                    retry_after=round(turnaway.retry_after, 3),
                    shed=True,
                )
            return
        self._metrics.connections_refused.labels("ws", turnaway.reason).inc()
        self.gate.warn("ratelimit.ws_connections", ip, reason=turnaway.reason)

    async def _handle(self, request: WebSocketRequest) -> None:
        """One handshake and, if admitted, one connection. Never raises."""
        conn_id = secrets.token_hex(6)  # its log lines' id, and its place's holder
        structlog.contextvars.bind_contextvars(conn_id=conn_id)
        before_request = _BEFORE_REQUEST.get(None)
        if before_request is not None:  # it is a handshake now: answered at shutdown
            self._before_request.discard(before_request)
        ticket = _TICKET.get(None)
        # The accept loop read the peer's address while the socket was fresh:
        # asking the socket again fails (ENOTCONN) once the peer has reset.
        ip = ticket.source if ticket is not None else "unknown"
        try:
            await self._admit_and_serve(request, ip, conn_id)
        except Exception as exc:  # reported as the accept loop reports any handler's error
            self._on_handler_error(ip, exc)

    async def _admit_and_serve(self, request: WebSocketRequest, ip: str, conn_id: str) -> None:
        async with AsyncExitStack() as places:
            try:
                claims = await self.gate.check(
                    ip, request.path, request.headers, self.registry.full()
                )
                if claims is not None:
                    await places.enter_async_context(self._places(claims.user_id, conn_id))
            except Refusal as refusal:
                self._metrics.ws_handshakes.labels(refusal.outcome).inc()
                await request.reject(refusal.status, extra_headers=refusal.headers)
                await drop_rejected(request)
                return
            ws = await request.accept()
            if claims is None:
                claims = await self._first_frame_auth(ws, ip)
                if claims is None:
                    return
                try:
                    await places.enter_async_context(self._places(claims.user_id, conn_id))
                except Refusal as refusal:
                    self._metrics.ws_handshakes.labels(refusal.outcome).inc()
                    await close_and_release(ws, 1013, "too many connections")
                    return
            await self._serve(ws, claims, ip)

    @asynccontextmanager
    async def _places(self, user_id: str, holder: str) -> AsyncIterator[None]:
        """Hold a place of this process and one of the user's places (named *holder*,
        random: unique among a user's connections on every process); or raise Refusal.

        Both are given back on exit, however it comes (the user's place with
        a shielded call of at most 2 s: a lease it could not give back lapses
        by itself). While held, the socket no longer counts as pending.
        """
        if self.registry.reserve(user_id) is Full.TOTAL:
            raise Refusal(503, "unavailable")
        limits = self._services.limits
        try:
            # Given back even when refused: a "no" may come from this process
            # alone after the shared store took the place and the answer was lost.
            if not await limits.occupy(names.CONNECTIONS_USER, user_id, holder):
                raise Refusal(503, "user_connection_limit")
            ticket = _TICKET.get(None)
            if ticket is not None:
                ticket.give_back(self.pending)
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await limits.vacate(names.CONNECTIONS_USER, user_id, holder)
            self.registry.release(user_id)

    async def _first_frame_auth(self, ws: WebSocketConnection, ip: str) -> AccessClaims | None:
        """Wait ``ws.auth_timeout`` for an ``auth`` frame; close 4001 otherwise."""
        with trio.move_on_after(self._config.auth_timeout):
            try:
                frame = decode_frame(await ws.get_message())
                if isinstance(frame, AuthFrame):
                    return await self.gate.authenticate(frame.token, ip, "auth_frame")
            except Refusal as refusal:
                if refusal.status == 429:  # a good token, but too many handshakes: later
                    self._metrics.ws_handshakes.labels(refusal.outcome).inc()
                    await close_and_release(ws, 1013, "too many handshakes; try later")
                    return None
            except (FrameError, InvalidToken):
                pass
            except ConnectionClosed:
                return None
        self.gate.warn("ws.auth_failed", ip, reason="no valid auth frame", source="frame")
        self._metrics.ws_handshakes.labels("unauthorized").inc()
        await close_and_release(ws, 4001, "authentication required")
        return None

    async def _username(self, user_id: str) -> str | None:
        """The user's name, remembered: usernames never change, so a store read
        per handshake buys nothing. A deleted account's sessions are revoked, so
        its tokens never get this far; the store is asked on a miss."""
        name = self._usernames.get(user_id)
        if name is None:
            user = await self._services.store.get_user(user_id)
            if user is None:
                return None
            name = self._usernames[user_id] = user.username
            if len(self._usernames) > USERNAME_CACHE:
                self._usernames.popitem(last=False)
        else:
            self._usernames.move_to_end(user_id)
        return name

    async def _serve(self, ws: WebSocketConnection, claims: AccessClaims, ip: str) -> None:
        username = await self._username(claims.user_id)
        if username is None:  # deleted since the token was issued
            await close_and_release(ws, 4003, "account gone")
            return
        self._metrics.ws_handshakes.labels("accepted").inc()
        structlog.contextvars.bind_contextvars(
            user_id=claims.user_id, device_id=claims.device_id, session_id=claims.session_id
        )
        self._log.info("ws.connected", ip=ip)
        conn = Connection(ws, claims, username, self._ctx)
        bus = self._services.bus
        self.registry.add(conn)
        try:
            # Before the replay: a message stored from now on is routed here.
            await bus.announce(claims.device_id)
            await self._note_seen(claims.session_id)
            await conn.run()
        finally:
            self.registry.remove(conn)
            bus.withdraw(claims.device_id)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self._note_seen(claims.session_id)

    async def _note_seen(self, session_id: str) -> None:
        """The device's last_seen_at; a store that fails here costs the user nothing."""
        try:
            await self._services.auth.note_seen(session_id)
        except StoreUnavailable:
            self._log.warning("ws.last_seen_unrecorded")

