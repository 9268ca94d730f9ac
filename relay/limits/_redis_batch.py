"""Script calls from many tasks, sent to Redis as pipelines: one round trip for many.

A relay under load makes thousands of limit checks a second (two per send
frame), each a tiny script. Sent one by one, the client library's per-call
work costs more CPU than everything else the check needs; in a pipeline it
costs a sixth of that. :class:`ScriptBatcher` sends whatever calls are
waiting as one pipeline, and while that round trip is under way the next
calls queue for the next one — no timer, no added wait: a lone call goes
out at once, a crowd shares the trips. The pipelines go out in RESP on a
connection of their own (:mod:`relay.resp`): coredis's per-call work cost
about four times the round trip itself.

Scripts run by ``EVALSHA``; a ``NOSCRIPT`` answer (Redis restarted, or its
script cache was flushed) loads the script and runs the call again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import trio

from ..resp import Reply, ReplyError, RespClient
from ._redis_client import FAILED

MAX_BATCH = 512
"""Calls sent in one pipeline at most."""


class Script:
    """A Lua source and its SHA-1 (the name ``EVALSHA`` runs it by)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's naming


class _Call:
    __slots__ = ("args", "done", "error", "key", "result", "script")

    def __init__(self, script: Script, key: str, args: Sequence[str]) -> None:
        self.script, self.key, self.args = script, key, list(args)
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class ScriptBatcher:
    """Runs :meth:`call` s in pipelines; :meth:`run` must be running (in a nursery)."""

    def __init__(self, client: RespClient) -> None:
        self._client = client
        self._queue: list[_Call] = []
        self._wake = trio.Event()

    async def call(self, script: Script, key: str, args: Sequence[str]) -> Any:
        """The reply of *script* run on *key* with *args*.

        Raises what the call raised (an unreachable Redis: the errors in
        ``UNREACHABLE``; an error reply: a :class:`~relay.resp.ReplyError`).
        Strings in the reply are ``str``. If the caller is
        cancelled the call may still run; its reply is then dropped.
        """
        pending = _Call(script, key, args)
        self._queue.append(pending)
        self._wake.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def run(self) -> None:
        """Send queued calls until cancelled; then fail those still queued, close the connection."""
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    await self._send(batch)
        finally:
            for pending in self._queue:
                pending.error = ConnectionError("limits are closing")
                pending.done.set()
            await self._client.aclose()  # shielded inside

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._pipeline(batch)
            unknown = [i for i, reply in enumerate(replies) if _no_script(reply)]
            if unknown:  # Redis lost its script cache: load, and run those calls again
                scripts = {batch[i].script.sha: batch[i].script for i in unknown}.values()
                await self._client.execute([["SCRIPT", "LOAD", s.source] for s in scripts])
                again = await self._pipeline([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
            for pending, reply in zip(batch, replies, strict=True):
                if isinstance(reply, BaseException):
                    pending.error = reply
                else:
                    pending.result = reply
        except FAILED as exc:  # the whole round trip failed: every call did
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                pending.done.set()

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """One round trip; each call's reply, or the error reply it got."""
        replies = await self._client.execute(
            [["EVALSHA", c.script.sha, 1, c.key, *c.args] for c in batch]
        )
        return [_text(reply) for reply in replies]


def _no_script(reply: object) -> bool:
    return isinstance(reply, ReplyError) and reply.kind == "NOSCRIPT"


def _text(reply: Reply) -> Any:
    """*reply* with its strings decoded (the scripts return numbers as text)."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [_text(item) for item in reply]
    return reply
