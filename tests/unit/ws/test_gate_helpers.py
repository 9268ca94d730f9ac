"""The gate's pure helpers: request targets and where a token comes from."""

from __future__ import annotations

import pytest

from relay.ws._gate import Refusal, split_target, token_from


def test_split_target_separates_path_and_query() -> None:
    """/ws?access_token=T gives the path and the parsed query."""
    assert split_target("/ws?access_token=abc&x=1") == (
        "/ws",
        {"access_token": ["abc"], "x": ["1"]},
    )
    assert split_target("/ws") == ("/ws", {})


def test_split_target_refuses_a_query_with_too_many_fields() -> None:
    """More than 16 query fields is a 400 refusal, not an exception."""
    with pytest.raises(Refusal) as caught:
        split_target("/ws?" + "&".join(f"f{i}=1" for i in range(17)))
    assert caught.value.status == 400


def test_bearer_header_wins_over_the_query() -> None:
    """With both, the Authorization header's token is used."""
    headers = [(b"authorization", b"Bearer from-header")]
    assert token_from(headers, {"access_token": ["from-query"]}) == ("from-header", "bearer")


def test_query_token_is_used_without_a_header() -> None:
    """access_token in the query, for browsers."""
    assert token_from([], {"access_token": ["q"]}) == ("q", "query")


@pytest.mark.parametrize("value", [b"Basic abc", b"Bearer", b"Bearer   ", b"token"])
def test_other_authorization_schemes_count_as_no_token(value: bytes) -> None:
    """Basic, empty or scheme-less Authorization values give no token."""
    assert token_from([(b"Authorization", value)], {}) == (None, "none")
