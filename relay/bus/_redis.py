"""The shared Bus: Redis pub/sub between relay processes, routed by a presence map.

Each process subscribes to a channel of its own (a random process id) and
to one for everyone. A device's route — which process holds it — is a key
with a TTL that the holding process refreshes; a publish looks its devices
up (one ``MGET``) and sends each holding process its share, in one pipeline.
Events for devices held here never touch Redis.

Redis pub/sub keeps nothing: a process that loses its subscription misses
what was published meanwhile. So when the subscription comes back the bus
rewrites this process's routes, re-reads the revocations it may have
missed (a capped stream), and delivers :class:`~relay.bus.Resync` to its
sink: every connection reads the store again. A process that could not
publish asks every other one to do the same once it is back. While Redis is
down nothing here raises: local delivery goes on, and the rest heals.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import coredis
import msgspec
import trio

from ..limits import REDIS_FAILED as FAILED
from ..limits import REDIS_TIMEOUT as TIMEOUT
from ..limits import redis_client
from ..obs import Logger, LogSampler
from ..resp import Arg, RedisAddress, Reply, ReplyError, RespClient, open_subscription
from ._events import Event, MessageQueued, Resync, SessionRevoked
from ._port import Sink
from ._routing import DECODER, BusKeys, Presence, envelopes, narrowed, route, targets

OUTGOING = 1024
"""Events waiting to be published; a full queue makes publishers wait (backpressure)."""
BATCH = 256
"""Events published in one round trip at most."""
RECONNECT_MAX = 1.0
"""Longest pause between attempts to subscribe again (it starts at 50 ms and doubles)."""
REVOCATIONS_KEPT = 10_000
"""The revocation stream's length, roughly (``MAXLEN ~``)."""
REVOCATIONS_LOOKBACK = 60.0
"""Seconds before its start from which a process reads the revocation stream."""
UNSENT_KEPT = 10_000
"""Revocations that could not be published, kept to publish once Redis is back."""
CHUNK = 1_000
"""Routes refreshed or removed per script call (the call holds Redis for about a ms)."""

_REFRESH = """
-- Keep each route if it is ours, or take it back if nobody has it; never steal one
-- (the device may have moved to another process). KEYS: routes; ARGV: us, TTL (ms).
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == false or owner == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  end
end
return #KEYS
"""
_WITHDRAW = """
-- Remove each route only if it is still ours. KEYS: routes; ARGV: us.
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return #KEYS
"""


class RedisBus:
    """:class:`~relay.bus.Bus` over Redis, shared by every relay process on it.

    Run :meth:`run` in a nursery (:func:`open_redis_bus` does): it
    subscribes, re-subscribes after a loss, publishes what :meth:`publish`
    queued, refreshes and removes routes. :meth:`publish` and
    :meth:`announce` never raise for Redis's sake; :meth:`ping` does.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        address: RedisAddress,
        *,
        prefix: str,
        presence_ttl: float,
        log: Logger,
        clock: Callable[[], float] = trio.current_time,
        process_id: str | None = None,
    ) -> None:
        self.process_id = process_id or secrets.token_hex(8)
        self._client = client
        self._address = address
        # The hot path (publishing, the subscription) speaks RESP on connections
        # of its own: coredis's per-call work cost ~4x the round trip (ADR 0009).
        self._publisher = RespClient(address, timeout=TIMEOUT)  # the publishing task's
        self._catch_up = RespClient(address, timeout=TIMEOUT)  # the subscribing task's
        self._keys = BusKeys(prefix)
        self._channel = self._keys.process(self.process_id)
        self._ttl_ms = max(1, round(presence_ttl * 1000))
        self._refresh_every = presence_ttl / 3
        self._log = log
        self._clock = clock
        self._sampler = LogSampler(clock)
        self._sink: Sink | None = None
        self._presence = Presence()
        self._send, self._outgoing = trio.open_memory_channel[tuple[Event, tuple[str, ...]]](
            OUTGOING
        )
        self._withdrawn = trio.Event()
        self._subscription: trio.CancelScope | None = None
        self._connected = False
        # Publishing resumes only once the Resync for what was missed is out, so
        # that no process gets a later message from here before it knows it
        # must read the store for the earlier ones (per-sender order).
        self._publishing = False
        # From a lost subscription until the Resync after the next one, pushes
        # from other processes are not delivered: the Resync's store read
        # sends them, in order, after the ones this process missed.
        self._in_sync = False
        self._down_since: float | None = None
        self._unsent: deque[SessionRevoked] = deque(maxlen=UNSENT_KEPT)
        self._missed_pushes = False  # a publish failed: the others must read the store too
        # The revocation stream is read from here on every (re)subscription. Its
        # ids are Redis's wall clock in ms; starting a minute before this process
        # did covers a Redis that was unreachable at start, and any clock skew
        # (a revocation delivered twice, or for nobody here, does nothing).
        self._revocations_seen = f"{int((time.time() - REVOCATIONS_LOOKBACK) * 1000)}-0"
        self._refresh = client.register_script(_REFRESH)
        self._withdraw = client.register_script(_WITHDRAW)

    @property
    def connected(self) -> bool:
        """True while subscribed (events from other processes can arrive)."""
        return self._connected

    def attach(self, sink: Sink | None) -> None:
        self._sink = sink

    # -- the port -------------------------------------------------------
    async def publish(self, event: Event) -> None:
        """Deliver *event* here at once; queue what other processes must get.

        Waits (and is a checkpoint) only if :data:`OUTGOING` events are
        already queued. Never raises for Redis: what cannot be published is
        made up for by a Resync (messages) or published later (revocations).
        """
        self._deliver(event)
        if isinstance(event, Resync):
            return
        remote = tuple(d for d in targets(event) if d not in self._presence)
        if remote or isinstance(event, SessionRevoked):
            try:
                # No checkpoint while there is room: the pipeline publishes a whole
                # batch before any connection's writer runs, so frames for one
                # socket share a write, as they do when delivered here.
                self._send.send_nowait((event, remote))
            except trio.WouldBlock:
                await self._send.send((event, remote))

    async def announce(self, device_id: str) -> None:
        """Route *device_id*'s events here from now on (written before returning).

        If Redis cannot be reached the route is written when it can (with a
        Resync for what was missed), and this returns at once.
        """
        self._presence.add(device_id)
        if not self._connected:
            return
        try:
            await self._claim(device_id)
        except FAILED as exc:
            self._lost(exc)

    def withdraw(self, device_id: str) -> None:
        """One connection of *device_id* fewer here; the route goes with the last (batched)."""
        if self._presence.remove(device_id):
            self._withdrawn.set()

    async def ping(self) -> None:
        """Return if subscribed and Redis answers; raise otherwise (readiness)."""
        if not self._connected:
            raise ConnectionError("the bus is not subscribed to Redis")
        await self._client.ping()

    # -- the tasks ------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe and serve for ever (until cancelled).

        Supports ``nursery.start()``: started once the first subscription is
        up, or has failed (the bus then starts down and heals by itself).
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_forever)
            nursery.start_soon(self._refresh_forever)
            nursery.start_soon(self._withdraw_forever)
            await nursery.start(self._subscribe_forever)
            task_status.started()

    async def _subscribe_forever(self, *, task_status: trio.TaskStatus[None]) -> None:
        pause, started = 0.05, False
        while True:
            with trio.CancelScope() as self._subscription:
                try:
                    async with open_subscription(
                        self._address, [self._channel, self._keys.everyone], timeout=TIMEOUT
                    ) as subscription:
                        self._connected = True  # from now on announce writes its route
                        await self._subscribed()
                        pause = 0.05
                        if not started:
                            started = True
                            task_status.started()
                        everyone = self._keys.everyone.encode()
                        async for batch in subscription.batches():
                            for channel, data in batch:  # no checkpoint: pushed together
                                self._received(data, broadcast=channel == everyone)
                except* FAILED as group:
                    self._lost(_first(group))
                except* anyio.ClosedResourceError:
                    # coredis 6.9, cancelled together with its connection pool (at
                    # shutdown), can raise this from a call's cleanup; the calls made
                    # in this scope (routes rewritten, the revocation stream read) are
                    # still coredis's. The cancellation goes on.
                    pass
            self._connected = False
            self._subscription = None
            if not started:
                started = True
                task_status.started()
            await trio.sleep(pause)
            pause = min(2 * pause, RECONNECT_MAX)

    async def _subscribed(self) -> None:
        """Subscribed (again): routes back, missed revocations, then everyone reads the store.

        Runs with :attr:`connected` already true, so that a device announced
        meanwhile writes its own route (the rewrite below is of a snapshot).
        Publishing resumes only after the Resync for the pushes missed here
        has gone out (and none was missed meanwhile): every process then
        learns of a gap before it gets a later message from this one.
        """
        await self._keep_routes(self._presence.devices())
        await self._read_missed_revocations()
        while True:
            missed, self._missed_pushes = self._missed_pushes, False
            unsent = list(self._unsent)
            commands: list[list[Arg]] = []
            for event in unsent:
                commands += self._revocation(event)
            if missed:  # what this process could not push: everyone reads
                commands.append(["PUBLISH", self._keys.everyone, self._encode(Resync())])
            if commands:
                _raise_first_error(await self._catch_up.execute(commands))
            for _ in unsent:
                self._unsent.popleft()
            if not self._missed_pushes:
                break  # (no await from this check to publishing again)
        self._publishing = True
        self._in_sync = True
        if self._down_since is not None:
            down_for = self._clock() - self._down_since
            self._log.warning("bus.redis_recovered", down_for=round(down_for, 3))
            self._down_since = None
        self._resync()  # what was published to here meanwhile was lost: read the store

    async def _read_missed_revocations(self) -> None:
        """Deliver the revocations published since this process last read the stream."""
        while True:
            entries = await self._client.xrange(
                self._keys.revocations, start=f"({self._revocations_seen}", count=1000
            )
            for entry in entries:
                self._received(entry.field_values.get("e", ""), broadcast=True)
                self._revocations_seen = str(entry.identifier)
            if len(entries) < 1000:
                return

    def _received(self, data: bytes | str, *, broadcast: bool) -> None:
        try:
            envelope = DECODER.decode(data)
        except msgspec.DecodeError:  # not from a relay of this version: ignore it
            self._log.error("bus.bad_message", broadcast=broadcast)
            return
        if envelope.origin == self.process_id and broadcast:
            return  # our own broadcast: delivered here when it was published
        for event in envelope.events:  # all of them before any connection writes
            if isinstance(event, Resync):
                self._resync()
            elif self._in_sync or not isinstance(event, MessageQueued):
                self._deliver(event)

    async def _publish_forever(self) -> None:
        async for first in self._outgoing:
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._outgoing.receive_nowait())
                except trio.WouldBlock:
                    break
            if not self._publishing:
                self._missed(batch)
                continue
            try:
                await self._publish_batch(batch)
            except FAILED as exc:
                self._missed(batch)
                self._lost(exc)

    async def _publish_batch(self, batch: list[tuple[Event, tuple[str, ...]]]) -> None:
        """One MGET for every device in *batch*, then one pipeline of publishes."""
        devices = list(dict.fromkeys(d for _, remote in batch for d in remote))
        owners: dict[str, str | None] = {}
        if devices:
            keys: list[Arg] = [self._keys.presence(d) for d in devices]
            (found,) = _raise_first_error(await self._publisher.execute([["MGET", *keys]]))
            if not isinstance(found, list) or len(found) != len(devices):
                raise ReplyError(f"MGET answered {type(found).__name__}")
            owners = {
                device: owner.decode() if isinstance(owner, bytes) else None
                for device, owner in zip(devices, found, strict=True)
            }
        shares: dict[str, list[Event]] = {}
        commands: list[list[Arg]] = []
        for event, remote in batch:
            if isinstance(event, SessionRevoked):
                commands += self._revocation(event)
                continue
            for owner, share in route(remote, owners, self.process_id).items():
                shares.setdefault(owner, []).append(narrowed(event, share))
        # One publish per process for the whole batch (in order), not one per event.
        for owner, events in shares.items():
            for payload in envelopes(self.process_id, events):
                commands.append(["PUBLISH", self._keys.process(owner), payload])
        if commands:
            _raise_first_error(await self._publisher.execute(commands))

    def _revocation(self, event: SessionRevoked) -> list[list[Arg]]:
        """Append *event* to the revocation stream (capped) and broadcast it."""
        payload = self._encode(event)
        return [
            ["XADD", self._keys.revocations, "MAXLEN", "~", REVOCATIONS_KEPT, "*", "e", payload],
            ["PUBLISH", self._keys.everyone, payload],
        ]

    async def _refresh_forever(self) -> None:
        """Every third of the TTL, keep every route of this process alive."""
        while True:
            await trio.sleep(self._refresh_every)
            if not self._connected:
                continue
            try:
                await self._keep_routes(self._presence.devices())
            except FAILED as exc:
                self._lost(exc)

    async def _keep_routes(self, devices: list[str]) -> None:
        """Write (or extend) the routes of *devices* to here, unless another process has one."""
        for start in range(0, len(devices), CHUNK):
            routes = [self._keys.presence(d) for d in devices[start : start + CHUNK]]
            await self._refresh(keys=routes, args=[self.process_id, str(self._ttl_ms)])

    async def _withdraw_forever(self) -> None:
        """Remove the routes of devices no longer held here, in batches."""
        while True:
            await self._withdrawn.wait()
            self._withdrawn = trio.Event()
            batch = self._presence.take_withdrawn()
            if not batch or not self._connected:
                continue  # down: the routes expire by themselves
            try:
                for start in range(0, len(batch), CHUNK):
                    routes = [self._keys.presence(d) for d in batch[start : start + CHUNK]]
                    await self._withdraw(keys=routes, args=[self.process_id])
                # Announced again while the batch was on its way: write it back.
                for device_id in batch:
                    if device_id in self._presence:
                        await self._claim(device_id)
            except FAILED as exc:
                self._lost(exc)

    async def aclose(self) -> None:
        """Close the hot path's connections (after :meth:`run` ended)."""
        await self._publisher.aclose()
        await self._catch_up.aclose()

    # -- helpers --------------------------------------------------------
    async def _claim(self, device_id: str) -> None:
        """Route *device_id* here, whoever had it (the latest connection wins)."""
        await self._client.set(self._keys.presence(device_id), self.process_id, px=self._ttl_ms)

    def _resync(self) -> None:
        """Every connection here reads the store again (each coalesces repeated asks)."""
        self._log.info("bus.resync")
        self._deliver(Resync())

    def _deliver(self, event: Event) -> None:
        if self._sink is not None:
            self._sink.handle(event)

    def _encode(self, event: Event) -> bytes:
        return envelopes(self.process_id, [event])[0]

    def _missed(self, batch: list[tuple[Event, tuple[str, ...]]]) -> None:
        for event, _ in batch:
            if isinstance(event, SessionRevoked):
                self._unsent.append(event)
            else:
                self._missed_pushes = True
        if self._sampler.admit("bus.publish_missed", "bus", self._clock()) is not None:
            self._log.warning("bus.publish_missed", events=len(batch))

    def _lost(self, exc: BaseException) -> None:
        """Redis failed: start again from a new subscription (with a Resync)."""
        self._connected = False
        self._publishing = False
        self._in_sync = False
        if self._down_since is None:
            self._down_since = self._clock()
            self._log.error("bus.redis_unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
        if self._subscription is not None:
            self._subscription.cancel()


def _raise_first_error(replies: list[Reply]) -> list[Reply]:
    """*replies*, unless one is an error reply: then raise it."""
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error in a (nested) exception group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def open_redis_bus(
    url: str,
    *,
    prefix: str,
    presence_ttl: float,
    log: Logger,
    clock: Callable[[], float] = trio.current_time,
) -> AsyncIterator[RedisBus]:
    """A :class:`RedisBus` on *url*, running in a nursery of its own until exit.

    Returns once subscribed, or once the first attempt failed (it keeps
    trying). On exit its tasks are cancelled and the client closed; the
    routes it wrote expire by themselves.
    """
    client = redis_client(url)
    bus = RedisBus(
        client,
        RedisAddress.parse(url),
        prefix=prefix,
        presence_ttl=presence_ttl,
        log=log,
        clock=clock,
    )
    async with client, trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        try:
            yield bus
        finally:
            nursery.cancel_scope.cancel()
            await bus.aclose()
