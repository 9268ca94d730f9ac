"""Script calls from many tasks, sent to Redis as pipelines: one round trip for many.

A relay under load makes thousands of limit checks a second (two per send
frame), each a tiny script. Sent one by one, the client library's per-call
work costs more CPU than everything else the check needs; in a pipeline it
costs a sixth of that. :class:`ScriptBatcher` sends whatever calls are
waiting as one pipeline, and while that round trip is under way the next
calls queue for the next one — no timer, no added wait: a lone call goes
out at once, a crowd shares the trips.

Scripts run by ``EVALSHA``; a ``NOSCRIPT`` answer (Redis restarted, or its
script cache was flushed) loads the script and runs the call again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import coredis
import trio
from coredis.exceptions import NoScriptError

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

    def __init__(self, client: coredis.Redis[str]) -> None:
        self._client = client
        self._queue: list[_Call] = []
        self._wake = trio.Event()

    async def call(self, script: Script, key: str, args: Sequence[str]) -> Any:
        """The reply of *script* run on *key* with *args*.

        Raises what the call raised (an unreachable Redis: the errors in
        ``UNREACHABLE``; an error reply: a ``RedisError``). If the caller is
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
        """Send queued calls until cancelled; then fail those still queued."""
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    await self._send(batch)
        finally:
            for pending in self._queue:
                pending.error = coredis.exceptions.ConnectionError("limits are closing")
                pending.done.set()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._pipeline(batch)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:  # Redis lost its script cache: load, and run those calls again
                for script in {batch[i].script.sha: batch[i].script for i in unknown}.values():
                    await self._client.script_load(script.source)
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
        """One round trip; each call's reply, or the error it got."""
        async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
            requests = [pipe.evalsha(c.script.sha, [c.key], c.args) for c in batch]
        replies: list[Any] = []
        for request in requests:
            try:
                replies.append(await request)
            except FAILED as exc:
                replies.append(exc)
        return replies
