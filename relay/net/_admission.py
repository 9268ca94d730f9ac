"""Admission at accept: the decision for one new socket, before any parsing. Pure.

An :class:`Admission` runs a server's checks in order — the per-source shed
check (a handshake bucket already empty), then each table of
:class:`~relay.net.ConnectionSlots` — and answers with a :class:`Ticket`
(the slots taken, given back when the connection ends) or a :class:`Turnaway`
(the canned HTTP answer to write before hanging up).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..limits import retry_after_header
from ._slots import ConnectionSlots, Full

ShedCheck = Callable[[str], "float | None"]
"""Given a source IP, seconds until it may connect again, or None if it may now."""


@dataclass(frozen=True, slots=True)
class Turnaway:
    """A refused socket: what to answer, and why (for metrics and logs)."""

    reason: str  # "shed", "source_full" or "total_full"
    response: bytes
    retry_after: float


class Ticket:
    """The slots one connection holds; :meth:`give_back` returns them, once each."""

    __slots__ = ("_held", "source")

    def __init__(self, source: str, held: list[ConnectionSlots]) -> None:
        self.source = source
        self._held = held

    def give_back(self, slots: ConnectionSlots | None = None) -> None:
        """Return *slots* (or every slot still held); idempotent."""
        keep: list[ConnectionSlots] = []
        for table in self._held:
            if slots is None or table is slots:
                table.give_back(self.source)
            else:
                keep.append(table)
        self._held = keep

    def holds(self, slots: ConnectionSlots) -> bool:
        return any(table is slots for table in self._held)


def canned_response(status: int, retry_after: float, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer that closes the connection."""
    reason = {429: b"Too Many Requests", 503: b"Service Unavailable"}.get(status, b"Refused")
    content_type = b"Content-Type: application/json\r\n" if body else b""
    return (
        b"HTTP/1.1 %d %s\r\nRetry-After: %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, reason, retry_after_header(retry_after).encode(), content_type, len(body), body)
    )


Answer = Callable[[str, float], bytes]
"""Builds the canned answer for a refusal reason and a retry delay."""


def plain_answer(reason: str, retry_after: float) -> bytes:
    """429 for a source over its limits, 503 when the server is full; no body."""
    return canned_response(503 if reason == "total_full" else 429, retry_after)


class Admission:
    """One server's checks at accept, in order: shed, then each slot table.

    *tables* pairs each :class:`ConnectionSlots` with the seconds a refused
    client should wait before trying again. The first failing check wins,
    and a refusal takes nothing (slots already taken for this socket are
    given back).
    """

    def __init__(
        self,
        tables: Sequence[tuple[ConnectionSlots, float]],
        *,
        shed: ShedCheck | None = None,
        answer: Answer = plain_answer,
    ) -> None:
        self._tables = list(tables)
        self._shed = shed
        self._answer = answer

    def admit(self, source: str) -> Ticket | Turnaway:
        if self._shed is not None:
            wait = self._shed(source)
            if wait is not None:
                return Turnaway("shed", self._answer("shed", wait), wait)
        taken: list[ConnectionSlots] = []
        for table, retry_after in self._tables:
            full = table.take(source)
            if full is not None:
                for held in taken:
                    held.give_back(source)
                reason = "total_full" if full is Full.TOTAL else "source_full"
                return Turnaway(reason, self._answer(reason, retry_after), retry_after)
            taken.append(table)
        return Ticket(source, taken)
