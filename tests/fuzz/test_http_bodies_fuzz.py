"""Hostile bodies on every route that reads one: refused as documented, never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.http._openapi import OPENAPI_PATH
from tests.conftest import PASSWORD
from tests.fuzz.conftest import EXAMPLES, FUZZER, Target
from tests.keyhelpers import make_device_keys

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BODY_OPERATIONS = [
    "POST /api/accounts",
    "POST /api/login",
    "POST /api/token/refresh",
    "POST /api/account/password",
    "POST /api/account/delete",
    "PUT /api/keys",
]
FIELDS = ["username", "password", "device_id", "device_name", "refresh_token"]
FIELDS += ["old_password", "new_password"]
FIELDS += ["identity_key", "signed_prekey", "one_time_prekeys"]


@pytest.fixture(scope="module")
def schema(target: Target) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{target.base_url}{OPENAPI_PATH}")


def valid_bodies() -> st.SearchStrategy[bytes]:
    upload, _ = make_device_keys(2)
    bodies = [
        {"username": FUZZER, "password": PASSWORD},
        {"username": "new.user", "password": PASSWORD, "device_name": "phone"},
        {"refresh_token": "x" * 43},
        upload,
    ]
    return st.sampled_from([json.dumps(body).encode() for body in bodies])


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid-looking body with a few bytes inserted, deleted or replaced."""
    data = draw(valid_bodies())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 3))
        data = data[:at] + draw(st.binary(max_size=4)) + data[at + cut :]
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=15,
)
wrong_shapes = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values).map(
    lambda body: json.dumps(body).encode()
)
huge_numbers = st.sampled_from([b"1" * 5_000, b"-" + b"9" * 400, b"1e999999", b"0." + b"0" * 4_000])
huge_values = st.tuples(st.sampled_from(FIELDS), huge_numbers).map(
    lambda pair: b'{"' + pair[0].encode() + b'": ' + pair[1] + b"}"
)
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]).map(
    lambda bad: b'{"username": "a' + bad + b'", "password": "' + PASSWORD.encode() + b'"}'
)
oversized = st.integers(65_536 - 20, 70_000).map(lambda n: b'{"username": "' + b"a" * n + b'"}')
hostile = (
    st.binary(max_size=300)
    | mangled()
    | wrong_shapes
    | huge_numbers
    | huge_values
    | invalid_utf8
    | oversized
)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Deep nesting, alone or as the value of a field the route reads, closed or not."""
    depth = draw(st.integers(1, 3_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" + closer * draw(st.integers(0, depth))
    field = draw(st.sampled_from(FIELDS)).encode()
    return draw(st.sampled_from([inner, b'{"' + field + b'": ' + inner + b"}"]))


def answers_as_documented(
    schema: BaseSchema, target: Target, label: str, body: bytes
) -> httpx.Response:
    """Send *body* raw to *label* and check the answer against the document."""
    method, path = label.split(" ", 1)
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if path == "/api/keys" or path.startswith("/api/account/"):
        headers["Authorization"] = f"Bearer {target.token_for(path)}"
    response = httpx.request(method, f"{target.base_url}{path}", content=body, headers=headers)
    target.tally.record(label, response.status_code)
    schema[path][method].Case(media_type="application/json").validate_response(
        response, checks=CHECKS
    )
    return response


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.mark.parametrize("label", BODY_OPERATIONS)
def test_hostile_bodies_are_refused_as_documented(
    schema: BaseSchema, target: Target, label: str
) -> None:
    """Garbage, wrong shapes, huge numbers, invalid UTF-8, oversized: documented 4xx, no 5xx."""

    @FUZZ_SETTINGS
    @given(hostile)
    def refused(body: bytes) -> None:
        # The right password would delete the account, and the rest would test only the 401.
        assume(not (label == "POST /api/account/delete" and PASSWORD.encode() in body))
        answers_as_documented(schema, target, label, body)

    refused()
    assert target.internal_errors() == []


@pytest.mark.parametrize("label", BODY_OPERATIONS)
def test_deeply_nested_bodies_are_refused_as_documented(
    schema: BaseSchema, target: Target, label: str
) -> None:
    """Thousands of nested arrays or objects are a 400, never a 5xx."""

    @FUZZ_SETTINGS
    @given(nested())
    def refused(body: bytes) -> None:
        answers_as_documented(schema, target, label, body)

    refused()
    assert target.internal_errors() == []
