"""Group commit: sends and acks from every connection, stored in batches.

Connections hand frames to one :class:`DeliveryPipeline` task through a
bounded channel and never await the store themselves. The task takes
whatever has queued up (up to ``store.batch_max``) and makes one store call
for it (:meth:`Store.commit`: acks, recipients, messages, one transaction,
one thread hop), and only then answers ``accepted`` and routes the messages
over the Bus. One task, in order, so
that per-sender FIFO holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ..bus import Bus, MessageQueued
from ..config import QueueConfig, StoreConfig
from ..obs import Logger, Metrics
from ..store import Outgoing, QueueFull, QueueLimits, SendResult, Store, Unroutable
from ._frames import SendFrame, accepted_frame, error_frame

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Answers(Protocol):
    """Where the answer to a send goes (a connection's outbox); never blocks."""

    def answer(self, frame: str) -> bool:
        """Queue the one answer (``accepted`` or an error) to a send."""


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One send frame, from whom, and where its answer goes."""

    answers: Answers
    user_id: str
    device_id: str
    username: str
    frame: SendFrame
    received_at: float  # monotonic: the frame's arrival (delivery latency)


@dataclass(slots=True)
class _Ack:
    device_id: str
    ids: tuple[str, ...]


class DeliveryPipeline:
    """Batches sends and acks into store transactions; see the module doc."""

    def __init__(
        self,
        queue: QueueConfig,
        store_config: StoreConfig,
        store: Store,
        bus: Bus,
        metrics: Metrics,
        log: Logger,
        wall_clock: Callable[[], float],
        capacity: int = 4096,
    ) -> None:
        self._ttl = queue.ttl
        self._limits = QueueLimits(queue.max_per_device, queue.max_per_sender)
        self._batch_max = store_config.batch_max
        self._delay = store_config.commit_delay
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._clock = wall_clock
        self._send, self._receive = trio.open_memory_channel[SendRequest | _Ack](capacity)

    async def submit_send(self, request: SendRequest) -> None:
        """Queue a send; waits only while the pipeline is full (backpressure)."""
        await self._send.send(request)

    async def submit_ack(self, device_id: str, ids: tuple[str, ...]) -> None:
        await self._send.send(_Ack(device_id, ids))

    def depth(self) -> int:
        """Submissions waiting for the next batch (for metrics)."""
        return self._send.statistics().current_buffer_used

    def close(self) -> None:
        """No more submissions: :meth:`run` stores what is queued, then returns."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until :meth:`close`, then drain and return.

        Cancellation abandons what is still queued (never acknowledged, so the
        clients resend); a batch whose commit has begun completes or rolls
        back whole in the store.
        """
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                if self._delay and self.depth() < self._batch_max:
                    # Group commit by time too: let a moment's sends and acks
                    # share the commit (a commit costs far more than a row).
                    await trio.sleep(self._delay)
                batch: list[SendRequest | _Ack] = [first]
                while len(batch) < self._batch_max:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._commit(batch)

    async def _commit(self, batch: Sequence[SendRequest | _Ack]) -> None:
        sends = [item for item in batch if isinstance(item, SendRequest)]
        acks: dict[str, list[str]] = {}
        for item in batch:
            if isinstance(item, _Ack):
                acks.setdefault(item.device_id, []).extend(item.ids)
        now = self._clock()
        outgoing = [
            Outgoing(
                sender_user_id=send.user_id,
                sender_device_id=send.device_id,
                sender_username=send.username,
                client_id=send.frame.id,
                to_username=send.frame.to.lower(),
                to_device=send.frame.device,
                body=bytes(send.frame.body).decode("utf-8"),
                sent_at=now,
                expires_at=now + self._ttl,
            )
            for send in sends
        ]
        try:
            # One store call, one transaction, one thread hop for the whole batch.
            results = await self._store.commit(list(acks.items()), outgoing, self._limits)
        except Exception:  # the store failed: refuse the batch, keep serving
            self._log.error(
                "store.batch_failed", sends=len(sends), acks=len(acks), exc_info=True
            )
            for send in sends:
                send.answers.answer(
                    error_frame("store_unavailable", "not stored; send again", send.frame.id)
                )
            return
        if sends:
            self._metrics.store_batch.observe(len(sends))
        for send, out, result in zip(sends, outgoing, results, strict=True):
            await self._answer(send, out, result)

    async def _answer(self, send: SendRequest, out: Outgoing, result: SendResult) -> None:
        if isinstance(result, Unroutable):
            send.answers.answer(error_frame(result.value, _UNROUTABLE[result], send.frame.id))
            return
        if isinstance(result, QueueFull):
            limit = "sender_share" if result.sender_share else "device"
            self._metrics.queue_full.labels(limit).inc()
            send.answers.answer(error_frame(*_queue_full(result), send.frame.id))
            return
        send.answers.answer(accepted_frame(send.frame.id, result.message_id))
        if result.duplicate:
            return  # already routed when first accepted; replay covers the rest
        await self._bus.publish(
            MessageQueued(
                device_ids=result.target_device_ids,
                seq=result.seq,
                message_id=result.message_id,
                sender=out.sender_username,
                sender_device=out.sender_device_id,
                body=send.frame.body,
                sent_at=out.sent_at,
                received_at=send.received_at,
            )
        )


_UNROUTABLE = {
    Unroutable.UNKNOWN_RECIPIENT: "no such user",
    Unroutable.UNKNOWN_DEVICE: "no such device",
    Unroutable.NO_DEVICES: "the user has no devices",
}


def _queue_full(full: QueueFull) -> tuple[str, str]:
    """The error frame's code and message for a refused send (nothing was stored)."""
    if full.sender_share:
        return (
            "queue_full",
            "not stored: you have as many messages waiting for this recipient as one "
            "sender may; send again once they have read some",
        )
    return "queue_full", "not stored: the recipient's queue is full; send again later"
