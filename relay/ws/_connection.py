"""One authenticated WebSocket: its reader, its writer and its heartbeat.

Each connection runs in its own nursery, owned by the handler: the reader is
the handler's task, and the nursery holds exactly two more — a single writer
fed by a bounded queue, and a heartbeat that also enforces token expiry.
Nothing another connection does can block this one: deliveries are pushed
with ``send_nowait``, and a full queue closes this connection with 1013.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..auth import AuthService
from ..config import WsConfig
from ..crypto import AccessClaims, InvalidToken
from ..limits import Limits, RatePolicy, TokenBucket, names
from ..obs import Logger, Metrics
from ..store import QueuedMessage, Store
from ._frames import (
    AckFrame,
    AuthFrame,
    FrameError,
    RefreshFrame,
    SendFrame,
    decode_frame,
    error_frame,
    message_frame,
    ready_frame,
)
from ._internals import close_and_release, send_frames
from ._pipeline import DeliveryPipeline
from ._registry import ConnectionRegistry

REPLAY_PAGE = 256
WRITE_BATCH = 64  # frames per socket write, at most


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What every connection shares (one per WS server)."""

    config: WsConfig
    store: Store
    auth: AuthService
    pipeline: DeliveryPipeline
    registry: ConnectionRegistry
    metrics: Metrics
    log: Logger
    wall_clock: Callable[[], float]
    limits: Limits  # send rates per device and per user, shared across connections


class Connection:
    """Serves one device's socket until it closes; see the module doc."""

    def __init__(
        self, ws: WebSocketConnection, claims: AccessClaims, username: str, ctx: ConnectionContext
    ) -> None:
        self.ws = ws
        self.user_id = claims.user_id
        self.device_id = claims.device_id
        self.session_id = claims.session_id
        self.username = username
        self._ctx = ctx
        self._expires_at = claims.expires_at
        self._send, self._outbound = trio.open_memory_channel[tuple[int, str]](
            ctx.config.outbound_queue
        )
        now = trio.current_time()
        # bad_frame_limit refusals in a row close the connection; one is
        # forgiven every 60 / limit seconds, so a rare mistake never adds up.
        self._bad_frames = TokenBucket(RatePolicy.per_minute(ctx.config.bad_frame_limit), now)
        # Sends awaiting their answer: at most half the outbound queue, so a
        # client pipelining hard is slowed down (its reader waits) instead of
        # overflowing its own queue with a burst of ``accepted`` frames.
        self._in_flight = trio.Semaphore(max(1, ctx.config.outbound_queue // 2))
        self._scope = trio.CancelScope()
        self.close_code = 1000
        self.close_reason = "bye"
        self._closing = False
        self._inbound = 0  # frames read: any traffic proves the peer alive
        self._reader_waiting = False  # blocked on our pipeline, not on the peer

    # -- called from anywhere (never block) -----------------------------
    def push(self, frame: str, seq: int = 0) -> None:
        """Queue a frame for the writer; a full queue closes with 1013."""
        try:
            self._send.send_nowait((seq, frame))
        except trio.WouldBlock:
            self.close(1013, "too slow to read its messages")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # closing already

    def answer(self, frame: str) -> None:
        self._in_flight.release()
        self.push(frame)

    def queued(self) -> int:
        """Frames waiting for the writer."""
        return self._send.statistics().current_buffer_used

    def push_message(self, seq: int, frame: str, received_at: float) -> None:
        self.push(frame, seq)
        self._ctx.metrics.delivery_latency.observe(trio.current_time() - received_at)

    def close(self, code: int, reason: str) -> None:
        """Close with *code* (first caller wins): stops every task of this connection."""
        if not self._closing:
            self._closing = True
            self.close_code, self.close_reason = code, reason
        self._scope.cancel()

    # -- the connection's life -----------------------------------------
    async def run(self) -> None:
        """Serve until the peer leaves or :meth:`close`; always closes the socket.

        A bug in this connection's handling closes it with 1011 and is logged;
        it never propagates to the server or to other connections.
        """
        ctx = self._ctx
        ctx.registry.add(self)
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    nursery.start_soon(self._heartbeat)
                    await self._read_loop()
                    nursery.cancel_scope.cancel()
        except Exception:
            ctx.log.error("ws.internal_error", exc_info=True)
            self.close(1011, "internal error")
        finally:
            ctx.registry.remove(self)
            self._send.close()
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await close_and_release(self.ws, self.close_code, self.close_reason)
            ctx.metrics.ws_closes.labels(str(self.close_code)).inc()
            ctx.log.info("ws.closed", code=self.close_code, reason=self.close_reason)

    async def _read_loop(self) -> None:
        ctx = self._ctx
        frames_in = ctx.metrics.ws_frames_in
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                if reason is not None and reason.code == 1009:
                    self.close(1009, "frame too big")
                return
            self._inbound += 1
            try:
                frame = decode_frame(data)
            except FrameError as exc:
                frames_in.labels("invalid").inc()
                self._refuse(exc.code, exc.message, exc.ref)
                continue
            if isinstance(frame, SendFrame):
                frames_in.labels("send").inc()
                await self._on_send(frame)
            elif isinstance(frame, AckFrame):
                frames_in.labels("ack").inc()
                self._reader_waiting = True
                await ctx.pipeline.submit_ack(self.device_id, frame.ids)
                self._reader_waiting = False
            elif isinstance(frame, RefreshFrame):
                frames_in.labels("refresh").inc()
                await self._on_refresh(frame.token)
            elif isinstance(frame, AuthFrame):
                frames_in.labels("auth").inc()
                self._refuse("already_authenticated", "this connection is authenticated")

    async def _on_send(self, frame: SendFrame) -> None:
        now = trio.current_time()
        limits = self._ctx.limits
        if (
            await limits.take(names.SEND, self.device_id) is not None
            or await limits.take(names.SEND_USER, self.user_id) is not None
        ):
            self.push(error_frame("rate_limited", "sending too fast; slow down", frame.id))
            return
        self._reader_waiting = True
        await self._in_flight.acquire()
        await self._ctx.pipeline.submit_send(self, frame, now)
        self._reader_waiting = False

    async def _on_refresh(self, token: str) -> None:
        try:
            claims = await self._ctx.auth.authenticate(token)
        except InvalidToken as exc:
            self._ctx.log.warning("ws.auth_failed", reason=exc.reason, source="refresh")
            self._refuse("invalid_token", "the token is not valid; the current one still applies")
            return
        if claims.session_id != self.session_id or claims.device_id != self.device_id:
            self._refuse("invalid_token", "the token belongs to another session")
            return
        self._expires_at = max(self._expires_at, claims.expires_at)

    def _refuse(self, code: str, message: str, ref: str | None = None) -> None:
        """Answer a bad frame; too many of them close the connection with 1008."""
        self.push(error_frame(code, message, ref))
        if self._bad_frames.take(trio.current_time()) is not None:
            self._ctx.log.warning("ws.policy_violation", last_code=code)
            self.close(1008, "too many invalid frames")

    async def _write_loop(self) -> None:
        try:
            await self._write()
        except ConnectionClosed:
            self._peer_gone()

    def _peer_gone(self) -> None:
        """The socket died under a write or a ping: stop, nothing to report."""
        if not self._closing:
            self._closing = True
            self.close_code, self.close_reason = 1006, "connection lost"
        self._scope.cancel()

    async def _write(self) -> None:
        ws, sent = self.ws, self._ctx.metrics.ws_frames_out
        await ws.send_message(ready_frame(self.username, self.device_id, self.session_id))
        replayed = await self._replay()
        async for first in self._outbound:
            # Take whatever else is already waiting: one socket write for all.
            waiting = [first]
            while len(waiting) < WRITE_BATCH:
                try:
                    waiting.append(self._outbound.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            # A message with seq <= replayed was stored before the replay
            # read it: it has been sent once already.
            frames = [frame for seq, frame in waiting if not seq or seq > replayed]
            if frames:
                await send_frames(ws, frames)
                messages = sum(1 for seq, _ in waiting if seq > replayed)
                sent.labels("message").inc(messages)
                sent.labels("control").inc(len(frames) - messages)

    async def _replay(self) -> int:
        """Send every stored unacked message in order; return the last seq sent.

        The connection is registered before this starts, so every message
        stored meanwhile is pushed to the outbound queue too. Between chunks
        the queue is drained so that it cannot fill during a long replay:
        control frames (``accepted``, errors) are sent at once; live message
        frames are dropped, and another page is read to send them in order.
        """
        store, last = self._ctx.store, 0
        while True:
            page = await store.pending(self.device_id, last, REPLAY_PAGE)
            missed = False
            for start in range(0, len(page), WRITE_BATCH):
                chunk = page[start : start + WRITE_BATCH]
                await send_frames(self.ws, [_frame(queued) for queued in chunk])
                last = chunk[-1].seq
                self._ctx.metrics.ws_frames_out.labels("message").inc(len(chunk))
                missed |= await self._send_control_frames(last)
            if len(page) < REPLAY_PAGE and not missed:
                return last

    async def _send_control_frames(self, replayed: int) -> bool:
        """Send waiting control frames; drop message frames. True if one was newer."""
        control: list[str] = []
        missed = False
        while True:
            try:
                seq, frame = self._outbound.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not seq:
                control.append(frame)
            elif seq > replayed:
                missed = True  # stored after the page was read: read again
        if control:
            await send_frames(self.ws, control)
            self._ctx.metrics.ws_frames_out.labels("control").inc(len(control))
        return missed

    async def _heartbeat(self) -> None:
        """Ping every interval; close on no pong (1013) or on token expiry (4001)."""
        config, clock = self._ctx.config, self._ctx.wall_clock
        next_ping = trio.current_time() + config.heartbeat_interval
        while True:
            expiry = trio.current_time() + (self._expires_at - clock())
            await trio.sleep_until(min(next_ping, expiry))
            if self._expires_at <= clock():
                self.close(4001, "token expired")
                return
            if trio.current_time() < next_ping:
                continue  # woke for an expiry that a refresh has since moved
            inbound = self._inbound
            with trio.move_on_after(config.heartbeat_timeout) as waiting:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    self._peer_gone()
                    return
            if waiting.cancelled_caught and inbound == self._inbound and not self._reader_waiting:
                # "Too slow to read": trio-websocket answers pings only while
                # its reader runs, so a client that stops reading goes quiet.
                self.close(1013, "heartbeat timeout")
                return
            next_ping = trio.current_time() + config.heartbeat_interval


def _frame(queued: QueuedMessage) -> str:
    return message_frame(
        queued.message_id,
        queued.sender_username,
        queued.sender_device_id,
        queued.body.encode("utf-8"),
        queued.sent_at,
    )
