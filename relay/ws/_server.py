"""The WebSocket server: listeners, the handshake handler, and shutdown.

Shutdown order (after websockets' documented one): stop accepting → answer
handshakes still in progress with 503 → close open connections with 1001 →
wait for their handlers (at most ``ws.shutdown_grace``) → store what the
pipeline still holds → return.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from ..crypto import AccessClaims, InvalidToken
from ..limits import KeyedBuckets, RatePolicy
from ..services import Services
from ._connection import Connection, ConnectionContext
from ._frames import AuthFrame, FrameError, decode_frame
from ._gate import HANDSHAKE_LIMIT, HandshakeGate, Refusal
from ._pipeline import DeliveryPipeline
from ._registry import ConnectionRegistry
from ._shed import SheddingListener


class WsServer:
    """Owns the gate, the registry and the pipeline of one WS endpoint."""

    def __init__(self, services: Services) -> None:
        config = services.config.ws
        self._services = services
        self._config = config
        self._log = services.log
        self._metrics = services.metrics
        self.registry = ConnectionRegistry(services.metrics, config.max_connections_per_user)
        self.gate = HandshakeGate(
            config, services.limits, services.auth, services.metrics, services.log
        )
        self.pipeline = DeliveryPipeline(
            services.config,
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
        self._ctx = ConnectionContext(
            config=config,
            store=services.store,
            auth=services.auth,
            pipeline=self.pipeline,
            registry=self.registry,
            metrics=services.metrics,
            log=services.log,
            wall_clock=services.wall_clock,
            send_limits=KeyedBuckets(RatePolicy(config.send_rate_per_second, config.send_burst)),
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
        sockets = await trio.open_tcp_listeners(config.port, host=config.host)
        self._services.bus.attach(self.registry)
        async with trio.open_nursery() as owner:
            await owner.start(self.pipeline.run)
            async with trio.open_nursery() as handlers:
                listeners = [
                    SheddingListener(sock, self._shed_check, handlers, self._on_shed)
                    for sock in sockets
                ]
                server = WebSocketServer(
                    self._handle,
                    listeners,  # type: ignore[arg-type]  # a Listener[SocketStream]
                    handler_nursery=handlers,
                    message_queue_size=4,
                    max_message_size=config.max_frame_bytes,
                    connect_timeout=config.handshake_timeout,
                    disconnect_timeout=2,
                )
                async with trio.open_nursery() as accepting:
                    await accepting.start(server.run)
                    task_status.started(sockets[0].socket.getsockname()[1])
                    await shutdown_trigger()
                    self._log.info("ws.shutdown", connections=len(self.registry))
                    self.gate.shutting_down = True
                    accepting.cancel_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                self.registry.close_all(1001, "server shutting down")
                handlers.cancel_scope.deadline = trio.current_time() + config.shutdown_grace
            self._services.bus.attach(None)
            self.pipeline.close()  # the owner nursery now waits for the last commit

    def _shed_check(self, ip: str) -> float | None:
        return self._services.limits.blocked_for(HANDSHAKE_LIMIT, ip)

    def _on_shed(self, ip: str, wait: float) -> None:
        self._metrics.ws_handshakes.labels("rate_limited").inc()
        self.gate.warn("ratelimit.handshake", ip, retry_after=round(wait, 3), shed=True)

    async def _handle(self, request: WebSocketRequest) -> None:
        """One handshake and, if admitted, one connection. Never raises."""
        structlog.contextvars.bind_contextvars(conn_id=secrets.token_hex(6))
        ip = _ip(request)
        try:
            await self._admit_and_serve(request, ip)
        except Exception:
            self._log.error("ws.handler_error", ip=ip, exc_info=True)

    async def _admit_and_serve(self, request: WebSocketRequest, ip: str) -> None:
        try:
            claims = await self.gate.check(ip, request.path, request.headers, len(self.registry))
            if claims is not None and not self.registry.has_room_for(claims.user_id):
                raise Refusal(503, "user_connection_limit")
        except Refusal as refusal:
            self._metrics.ws_handshakes.labels(refusal.outcome).inc()
            await request.reject(refusal.status, extra_headers=refusal.headers)
            await _drop(request)
            return
        ws = await request.accept()
        if claims is None:
            claims = await self._first_frame_auth(ws, ip)
            if claims is None:
                return
            if not self.registry.has_room_for(claims.user_id):
                self._metrics.ws_handshakes.labels("user_connection_limit").inc()
                await ws.aclose(1013, "too many connections for this user")
                return
        await self._serve(ws, claims, ip)

    async def _first_frame_auth(self, ws: WebSocketConnection, ip: str) -> AccessClaims | None:
        """Wait ``ws.auth_timeout`` for an ``auth`` frame; close 4001 otherwise."""
        with trio.move_on_after(self._config.auth_timeout):
            try:
                frame = decode_frame(await ws.get_message())
                if isinstance(frame, AuthFrame):
                    return await self.gate.authenticate(frame.token, ip, "auth_frame")
            except (FrameError, Refusal, InvalidToken):
                pass
            except ConnectionClosed:
                return None
        self.gate.warn("ws.auth_failed", ip, reason="no valid auth frame", source="frame")
        self._metrics.ws_handshakes.labels("unauthorized").inc()
        await ws.aclose(4001, "authentication required")
        return None

    async def _serve(self, ws: WebSocketConnection, claims: AccessClaims, ip: str) -> None:
        user = await self._services.store.get_user(claims.user_id)
        if user is None:  # deleted since the token was issued
            await ws.aclose(4003, "account gone")
            return
        self._metrics.ws_handshakes.labels("accepted").inc()
        structlog.contextvars.bind_contextvars(
            user_id=claims.user_id, device_id=claims.device_id, session_id=claims.session_id
        )
        self._log.info("ws.connected", ip=ip)
        await Connection(ws, claims, user.username, self._ctx).run()


async def _drop(request: WebSocketRequest) -> None:
    """Close the TCP connection of a rejected handshake now.

    trio-websocket 0.12 marks a rejected connection closed without closing
    its stream, so its reader task (and the socket) would live until the
    client hangs up: a flood of refused clients that never hang up would pile
    up tasks and file descriptors. There is no public call for this.
    """
    close_stream = getattr(request._connection, "_close_stream", None)
    if close_stream is not None:
        await close_stream()


def _ip(request: WebSocketRequest) -> str:
    remote = request.remote
    return str(getattr(remote, "address", remote))
