"""Admission at accept: shed first, then each slot table; tickets give slots back."""

from __future__ import annotations

from relay.net import Admission, ConnectionSlots, Ticket, Turnaway, canned_response


def test_an_admitted_socket_holds_a_slot_in_every_table() -> None:
    """The ticket holds one slot per table until given back."""
    budget, per_ip = ConnectionSlots(total=10), ConnectionSlots(total=None, per_source=1)
    ticket = Admission([(budget, 1.0), (per_ip, 1.0)]).admit("1.2.3.4")
    assert isinstance(ticket, Ticket)
    assert budget.used == 1 and per_ip.held_by("1.2.3.4") == 1
    ticket.give_back()
    assert budget.used == 0 and per_ip.used == 0


def test_a_refusal_gives_back_what_earlier_tables_granted() -> None:
    """Refused by the second table: the first table's slot is not kept."""
    budget, per_ip = ConnectionSlots(total=10), ConnectionSlots(total=None, per_source=1)
    admission = Admission([(budget, 1.0), (per_ip, 2.0)])
    assert isinstance(admission.admit("a"), Ticket)
    refused = admission.admit("a")
    assert isinstance(refused, Turnaway) and refused.reason == "source_full"
    assert refused.retry_after == 2.0
    assert budget.used == 1


def test_a_full_total_is_a_503() -> None:
    """Everyone together at the cap: 503, the client should come back later."""
    admission = Admission([(ConnectionSlots(total=1), 1.0)])
    admission.admit("a")
    refused = admission.admit("b")
    assert isinstance(refused, Turnaway) and refused.reason == "total_full"
    assert refused.response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_a_shed_source_takes_no_slot() -> None:
    """An empty handshake bucket is answered 429 before any slot is taken."""
    budget = ConnectionSlots(total=10)
    admission = Admission([(budget, 1.0)], shed=lambda ip: 30.0 if ip == "bad" else None)
    refused = admission.admit("bad")
    assert isinstance(refused, Turnaway) and refused.reason == "shed"
    assert b"Retry-After: 30\r\n" in refused.response
    assert budget.used == 0


def test_giving_back_one_table_keeps_the_others() -> None:
    """A pending slot can be returned early while the budget slot stays held."""
    budget, pending = ConnectionSlots(total=10), ConnectionSlots(total=10)
    ticket = Admission([(budget, 1.0), (pending, 1.0)]).admit("a")
    assert isinstance(ticket, Ticket)
    ticket.give_back(pending)
    ticket.give_back(pending)  # idempotent
    assert pending.used == 0 and budget.used == 1 and ticket.holds(budget)


def test_canned_response_is_a_whole_closing_http_answer() -> None:
    """Status line, Retry-After rounded up, Content-Length and Connection: close."""
    answer = canned_response(429, 0.2, b'{"error":"x"}')
    assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n")
    assert b"Content-Length: 13\r\nConnection: close\r\n\r\n" in answer
    assert answer.endswith(b'{"error":"x"}')
