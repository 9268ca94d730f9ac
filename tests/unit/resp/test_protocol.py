"""RESP2 sans-I/O: what goes out for a command, and what comes back from any split of bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.resp import ProtocolError, Reply, ReplyError, ReplyParser, encode

REPLIES = (
    b"+OK\r\n"
    b"-NOSCRIPT No matching script.\r\n"
    b":42\r\n"
    b"$5\r\nhe\r\no\r\n"  # a bulk string may hold CRLF: its length says where it ends
    b"$-1\r\n"
    b"*3\r\n:1\r\n$0\r\n\r\n*1\r\n$1\r\nx\r\n"
    b"*-1\r\n"
    b"*0\r\n"
)
PARSED: list[object] = [b"OK", "NOSCRIPT", 42, b"he\r\no", None, [1, b"", [b"x"]], None, []]


def plain(replies: list[Reply]) -> list[object]:
    """Replies with each error as its words, to compare by value."""
    return [str(r).split(" ")[0] if isinstance(r, ReplyError) else r for r in replies]


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode([["SET", b"k\r\n", 7]]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n"


def test_a_pipeline_is_its_commands_one_after_the_other() -> None:
    assert encode([["PING"], ["GET", "é"]]) == (
        b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_every_reply_type_is_parsed() -> None:
    assert plain(ReplyParser().feed(REPLIES)) == PARSED


def test_an_error_reply_is_returned_not_raised_and_names_its_kind() -> None:
    (reply,) = ReplyParser().feed(b"-NOSCRIPT No matching script.\r\n")
    assert isinstance(reply, ReplyError)
    assert reply.kind == "NOSCRIPT"
    assert str(reply) == "NOSCRIPT No matching script."


@given(st.lists(st.integers(min_value=0, max_value=len(REPLIES)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_replies_in_order(cuts: list[int]) -> None:
    parser = ReplyParser()
    got: list[Reply] = []
    start = 0
    for cut in [*sorted(cuts), len(REPLIES)]:
        got += parser.feed(REPLIES[start:cut])
        start = cut
    assert plain(got) == PARSED
    assert parser.pending == 0


def test_a_partial_reply_is_kept_until_it_completes() -> None:
    parser = ReplyParser()
    assert parser.feed(b"*2\r\n$3\r\nfoo\r\n$3\r\nba") == []
    assert parser.pending > 0
    assert parser.feed(b"r\r\n:1\r\n") == [[b"foo", b"bar"], 1]


@pytest.mark.parametrize(
    "data",
    [b"?what\r\n", b":twelve\r\n", b"$9999999999999\r\n", b"*x\r\n"],
    ids=["unknown type", "bad integer", "bulk over Redis's limit", "bad array length"],
)
def test_bytes_that_are_not_resp_raise_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(data)


def test_a_protocol_error_is_a_connection_error() -> None:
    """Callers treat a stream they cannot read like a lost connection (unreachable)."""
    assert issubclass(ProtocolError, ConnectionError)
