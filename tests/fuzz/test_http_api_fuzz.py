"""schemathesis against the served OpenAPI document: no 5xx, every answer as documented."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.auths import AuthContext, AuthStorage
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.config import Config
from relay.http._openapi import OPENAPI_PATH, openapi_document
from tests.conftest import PASSWORD
from tests.fuzz.conftest import EXAMPLES, FUZZER, PEER, Target
from tests.keyhelpers import make_device_keys

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
CLOSE = {"Connection": "close"}
# Every documented operation (schemathesis leaves out the document's own path).
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item in openapi_document(Config()).get("paths", {}).items()
    for method in item
    if path != OPENAPI_PATH
]


@pytest.fixture(scope="module")
def schema(target: Target) -> BaseSchema:
    """The document as the running relay serves it."""
    return schemathesis.openapi.from_url(f"{target.base_url}{OPENAPI_PATH}")


def bearer_auth(target: Target) -> AuthStorage[str]:
    """The primary session's token on Bearer requests (unless the case omits it on purpose)."""

    class Bearer:
        def get(self, case: Case, context: AuthContext) -> str:
            return target.token_for(context.operation.path)

        def set(self, case: Case, data: str, context: AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    storage: AuthStorage[str] = AuthStorage()
    storage.auth(refresh_interval=None)(Bearer)
    return storage


def known_values(target: Target, label: str) -> tuple[str, st.SearchStrategy[Any]] | None:
    """Real ids or bodies that reach *label*'s success path: (what they fill, values)."""
    to_refresh, to_delete = target.spares[:2], target.spares[2:]
    fuzzer = {"username": FUZZER, "password": PASSWORD}
    known: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
        "POST /api/login": (
            "body",
            st.sampled_from([fuzzer, {**fuzzer, "device_id": target.primary.device_id}]),
        ),
        "POST /api/token/refresh": (
            "body",
            st.sampled_from([{"refresh_token": s["refresh_token"]} for s in to_refresh]),
        ),
        "DELETE /api/devices/{device_id}": (
            "path_parameters",
            st.just({"device_id": target.spare_device}),
        ),
        "DELETE /api/sessions/{session_id}": (
            "path_parameters",
            st.sampled_from([{"session_id": s["session_id"]} for s in to_delete]),
        ),
        "PUT /api/keys": (
            "body",
            st.integers(0, 2**31 - 4).map(lambda first: make_device_keys(3, first_key_id=first)[0]),
        ),
        "POST /api/account/password": (
            "body",
            st.just({"old_password": PASSWORD, "new_password": PASSWORD}),
        ),
        "POST /api/account/delete": ("body", st.just({"password": PASSWORD})),
        "GET /api/keys/{username}": ("path_parameters", st.just({"username": PEER})),
        "GET /api/keys/{username}/{device_id}": (
            "path_parameters",
            st.just({"username": PEER, "device_id": target.peer.device_id}),
        ),
    }
    return known.get(label)


def cases(schema: BaseSchema, target: Target, label: str) -> st.SearchStrategy[Case]:
    """Valid and invalid requests to *label*, and some with real ids and bodies."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    auth = bearer_auth(target)
    generated = [
        operation.as_strategy(GenerationMode.POSITIVE, auth_storage=auth),
        operation.as_strategy(GenerationMode.NEGATIVE, auth_storage=auth),
    ]
    known = known_values(target, label)
    if known is None:
        return st.one_of(generated)
    name, values = known
    real = values.flatmap(lambda value: operation.as_strategy(auth_storage=auth, **{name: value}))
    return st.one_of(*generated, real)


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests_get_documented_answers_and_no_5xx(
    schema: BaseSchema, target: Target, label: str
) -> None:
    """Valid, invalid and real requests to an operation: no 5xx; every answer as documented."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(cases(schema, target, label))
    def answers_as_documented(case: Case) -> None:
        if label == "GET /api/keys/{username}" and case.path_parameters == {"username": "count"}:
            reject()  # that URL is GET /api/keys/count, another operation
        # One connection per request, closed by the server first (see the
        # Fuzzing section of docs/security.md for why).
        response = case.call(base_url=target.base_url, headers=CLOSE, timeout=10)
        target.tally.record(label, response.status_code)
        case.validate_response(response, checks=CHECKS)

    answers_as_documented()
    assert target.internal_errors() == []
    assert target.primary_alive()
