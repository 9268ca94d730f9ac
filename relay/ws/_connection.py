"""One authenticated WebSocket: its reader, and a writer only while there is writing.

The connection runs in its own nursery, owned by the handler: the reader is
the handler's task; a writer task is started when something is put in the
outbox and ends when the outbox is empty; the timers (pings, pong deadlines,
token expiry) are driven by the server's one heartbeat task. An idle
connection holds no task of its own beyond its reader. The decisions are
:class:`~relay.ws._life.ConnectionLife`'s; this class does the I/O.

Nothing another connection does can block this one: deliveries are put in
its outbox without waiting, and a full outbox closes it with 1013.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..auth import AuthService
from ..config import WsConfig
from ..crypto import AccessClaims, InvalidToken
from ..limits import Limits, names
from ..obs import Logger, LogSampler, Metrics
from ..store import QueuedMessage, Store, StoreUnavailable
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
from ._heartbeats import Heartbeats
from ._internals import close_and_release, prepare_ping, send_frames
from ._life import PEER_GONE, PING, TOO_SLOW, Close, ConnectionLife, LifePolicy
from ._outbox import Control, Delivery, Outbox, Ping
from ._pipeline import DeliveryPipeline, SendRequest

REPLAY_PAGE = 256
REPLAY_RETRY = 1.0  # seconds before a replay the store refused is tried again; doubles ...
REPLAY_RETRY_MAX = 30.0  # ... up to this
WRITE_BATCH = 64  # frames per socket write, at most


class FrameCounters:
    """The frame counters' labelled children, looked up once, not per frame."""

    __slots__ = ("by_type", "control_out", "message_out")

    def __init__(self, metrics: Metrics) -> None:
        self.by_type = {
            kind: metrics.ws_frames_in.labels(kind)
            for kind in ("send", "ack", "refresh", "auth", "invalid")
        }
        self.message_out = metrics.ws_frames_out.labels("message")
        self.control_out = metrics.ws_frames_out.labels("control")


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What every connection of one server shares."""

    config: WsConfig
    store: Store
    auth: AuthService
    pipeline: DeliveryPipeline
    heartbeats: Heartbeats
    limits: Limits  # send rates per device and per user, shared across connections
    metrics: Metrics
    log: Logger
    clock: Callable[[], float]  # monotonic (Trio's): timers, rates
    wall_clock: Callable[[], float]  # Unix time: only to read token expiry
    counters: FrameCounters
    sampler: LogSampler  # warnings every connection may raise at once (the store is down)


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
        config = ctx.config
        now = ctx.clock()
        self.life = ConnectionLife(
            LifePolicy(config.heartbeat_interval, config.heartbeat_timeout, config.bad_frame_limit),
            now,
            self._monotonic(claims.expires_at, now),
        )
        # Sends awaiting their answer: at most half the outbox, so a client
        # pipelining hard is slowed down (its reader waits) instead of
        # overflowing its own outbox with a burst of ``accepted`` frames.
        self.outbox = Outbox(config.outbound_queue, config.outbound_queue // 2, self._wake_writer)
        self.scheduled_at: float | None = None  # Heartbeats' bookkeeping
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._writing = False
        self._replayed: int | None = None  # the last seq the replay sent, once it is done
        self._sent_seq = 0  # the highest message seq written to the socket
        # Every stored message up to this seq has been written: replays read the
        # store in order and advance it; live pushes may run ahead of it, and
        # after a lost push (a bus outage) they leave a gap behind them, which
        # the next catch-up, reading from here, fills.
        self._contiguous = 0
        self._catch_up = False  # read the store again (the bus may have dropped pushes)
        self._replaying = True  # reading the store: live messages need not be queued
        self._missed = 0  # the highest seq pushed live while replaying
        self._replay_pause = REPLAY_RETRY  # before the next try, if the store refuses one
        self._pong: trio.Event | None = None

    def _monotonic(self, unix_time: float, now: float) -> float:
        """*unix_time* (a token's expiry) on the monotonic clock: one clock inside."""
        return now + (unix_time - self._ctx.wall_clock())

    # -- called from anywhere (never block) -----------------------------
    def push(self, frame: str) -> None:
        """Queue a control frame; a full outbox closes with 1013."""
        if not self.outbox.put(Control(frame)):
            self.close(TOO_SLOW)

    def push_message(self, seq: int, frame: str, received_at: float) -> None:
        """Queue a live message frame; a full outbox closes with 1013.

        While the connection replays from the store, the message is only
        noted: the replay reads it from the store, in order, so a burst of
        live messages during a long replay can never fill the outbox.
        """
        if self._replaying:
            self._missed = max(self._missed, seq)
            return
        if not self.outbox.put(Delivery(seq, frame, received_at)):
            self.close(TOO_SLOW)
        elif received_at:
            self._ctx.metrics.delivery_latency.observe(self._ctx.clock() - received_at)

    def queued(self) -> int:
        """Frames waiting for the writer."""
        return len(self.outbox)

    def catch_up(self) -> None:
        """Send what the store holds past the last message sent (after lost pushes)."""
        self._catch_up = True
        self._replaying = True
        self._wake_writer()

    def close(self, verdict: Close) -> None:
        """Close with *verdict* (the first one wins): stops every task of this connection."""
        self.life.close(verdict)
        self._scope.cancel()

    # -- driven by the server's heartbeat task --------------------------
    def deadline(self) -> float | None:
        return None if self.life.closed is not None else self.life.deadline()

    def tick(self, now: float) -> None:
        if self._pong is not None and self._pong.is_set():
            self.life.on_pong()
            self._pong = None
        action = self.life.on_timer(now)
        if isinstance(action, Close):
            self._scope.cancel()
        elif action is PING:
            ping = prepare_ping(self.ws)
            if ping is not None:
                data, self._pong = ping
                if not self.outbox.put(Ping(data)):
                    self.close(TOO_SLOW)

    # -- the connection's life -----------------------------------------
    async def run(self) -> None:
        """Serve until the peer leaves or :meth:`close`; always closes the socket.

        A bug in this connection's handling closes it with 1011 and is logged;
        it never propagates to the server or to other connections.
        """
        ctx = self._ctx
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._wake_writer()  # ready, then the replay
                    ctx.heartbeats.schedule(self)
                    await self._read_loop()
                    nursery.cancel_scope.cancel()
        except Exception:
            ctx.log.error("ws.internal_error", exc_info=True)
            self.life.close(Close(1011, "internal error"))
        finally:
            self._nursery = None
            ctx.heartbeats.forget(self)
            verdict = self.life.closed or Close(1000, "bye")
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await close_and_release(self.ws, verdict.code, verdict.reason)
            ctx.metrics.ws_closes.labels(str(verdict.code)).inc()
            ctx.log.info("ws.closed", code=verdict.code, reason=verdict.reason)

    async def _read_loop(self) -> None:
        ctx, life = self._ctx, self.life
        frames_in = ctx.counters.by_type
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                if reason is not None and reason.code == 1009:
                    self.close(Close(1009, "frame too big"))
                return
            life.on_inbound()
            try:
                frame = decode_frame(data)
            except FrameError as exc:
                frames_in["invalid"].inc()
                self._refuse(exc.code, exc.message, exc.ref)
                continue
            if isinstance(frame, SendFrame):
                frames_in["send"].inc()
                await self._on_send(frame)
            elif isinstance(frame, AckFrame):
                frames_in["ack"].inc()
                life.reader_waiting = True
                await ctx.pipeline.submit_ack(self.device_id, frame.ids)
                life.reader_waiting = False
            elif isinstance(frame, RefreshFrame):
                frames_in["refresh"].inc()
                await self._on_refresh(frame.token)
            elif isinstance(frame, AuthFrame):
                frames_in["auth"].inc()
                self._refuse("already_authenticated", "this connection is authenticated")

    async def _on_send(self, frame: SendFrame) -> None:
        ctx = self._ctx
        received_at = ctx.clock()
        if (
            await ctx.limits.take(names.SEND, self.device_id) is not None
            or await ctx.limits.take(names.SEND_USER, self.user_id) is not None
        ):
            self.push(error_frame("rate_limited", "sending too fast; slow down", frame.id))
            return
        self.life.reader_waiting = True
        await self.outbox.reserve()
        await ctx.pipeline.submit_send(
            SendRequest(
                self.outbox, self.user_id, self.device_id, self.username, frame, received_at
            )
        )
        self.life.reader_waiting = False

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
        now = self._ctx.clock()
        self.life.on_refresh(self._monotonic(claims.expires_at, now))
        self._ctx.heartbeats.schedule(self)

    def _refuse(self, code: str, message: str, ref: str | None = None) -> None:
        """Answer a bad frame; too many of them close the connection with 1008."""
        self.push(error_frame(code, message, ref))
        verdict = self.life.on_bad_frame(self._ctx.clock())
        if verdict is not None:
            self._ctx.log.warning("ws.policy_violation", last_code=code)
            self.close(verdict)

    # -- the writer ---------------------------------------------------------
    def _wake_writer(self) -> None:
        """Start the writer unless it runs (it ends when the outbox is empty)."""
        if not self._writing and self._nursery is not None:
            self._writing = True
            self._nursery.start_soon(self._write)

    async def _write(self) -> None:
        try:
            if self._replayed is None:
                await send_frames(
                    self.ws, [ready_frame(self.username, self.device_id, self.session_id)]
                )
                self._replayed = await self._replay_or_retry_later(0)
            while self._catch_up or self.outbox:
                if self._catch_up:
                    self._catch_up = False
                    self._replayed = await self._replay_or_retry_later(self._contiguous)
                await self._write_waiting(self._replayed)
        except ConnectionClosed:
            self.close(PEER_GONE)  # the socket died under a write: nothing to report
        finally:
            self._writing = False

    async def _write_waiting(self, replayed: int) -> None:
        """One socket write for whatever is waiting (at most WRITE_BATCH frames).

        A message with seq <= *replayed* was stored before the replay read it:
        it has been sent once already.
        """
        out: list[str | bytes] = []
        messages = 0
        for item in self.outbox.take(WRITE_BATCH):
            if isinstance(item, Delivery):
                if item.seq > replayed:
                    out.append(item.frame)
                    messages += 1
                    self._sent_seq = max(self._sent_seq, item.seq)
            elif isinstance(item, Control):
                out.append(item.frame)
            else:
                out.append(item.data)
        if out:
            await send_frames(self.ws, out)
            counters = self._ctx.counters
            counters.message_out.inc(messages)
            counters.control_out.inc(len(out) - messages)

    async def _replay_or_retry_later(self, after: int) -> int:
        """:meth:`_replay`; if the store is unavailable, try again after a pause.

        The socket stays open meanwhile (answers and pings go on; the client
        need not reconnect), and the connection stays in replay mode: live
        messages are only noted, and the next replay, from the last message
        written, sends them in order. Returns the last seq written.
        """
        try:
            last = await self._replay(after)
        except StoreUnavailable as exc:
            pause = self._replay_pause
            self._replay_pause = min(pause * 2, REPLAY_RETRY_MAX)
            ctx = self._ctx
            suppressed = ctx.sampler.admit("ws.replay_deferred", "store", ctx.clock())
            if suppressed is not None:  # one line for all connections, every 10 s
                ctx.log.warning(
                    "ws.replay_deferred", detail=exc.detail, retry_in_s=pause, suppressed=suppressed
                )
            if self._nursery is not None:
                self._nursery.start_soon(self._catch_up_after, pause)
            return self._sent_seq
        self._replay_pause = REPLAY_RETRY
        return last

    async def _catch_up_after(self, pause: float) -> None:
        await trio.sleep(pause)
        self.catch_up()

    async def _replay(self, after: int) -> int:
        """Send every stored unacked message past seq *after*, in order; the last seq sent.

        The connection is registered (and announced on the bus) before this
        starts, so every message stored meanwhile is pushed here too; while
        replaying, such a push is only noted (``_missed``), and another page
        is read until none is newer than what was sent. Between chunks the
        answers and pings waiting in the outbox are sent, so they are not
        held up by a long replay.
        """
        store, last = self._ctx.store, after
        self._replaying = True
        while True:
            page = await store.pending(self.device_id, last, REPLAY_PAGE)
            for start in range(0, len(page), WRITE_BATCH):
                chunk = page[start : start + WRITE_BATCH]
                await send_frames(self.ws, [_frame(queued) for queued in chunk])
                last = chunk[-1].seq
                self._sent_seq = max(self._sent_seq, last)
                self._contiguous = last
                self._ctx.counters.message_out.inc(len(chunk))
                await self._send_waiting_controls()
            if len(page) < REPLAY_PAGE and self._missed <= last:
                self._replaying = False  # no await from here to the return
                return last

    async def _send_waiting_controls(self) -> None:
        """Send the answers and pings waiting in the outbox (no messages are queued now)."""
        control = [
            item.frame if isinstance(item, Control) else item.data
            for item in self.outbox.take(len(self.outbox))
            if not isinstance(item, Delivery)
        ]
        if control:
            await send_frames(self.ws, control)
            self._ctx.counters.control_out.inc(len(control))


def _frame(queued: QueuedMessage) -> str:
    return message_frame(
        queued.message_id,
        queued.sender_username,
        queued.sender_device_id,
        queued.body.encode("utf-8"),
        queued.sent_at,
    )
