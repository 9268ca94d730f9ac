"""GET /api/openapi.json: a valid OpenAPI 3.1 document of exactly the routes the app has."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from relay.http import create_app
from relay.services import Services
from tests.conftest import PASSWORD, Relay, RelayFactory
from tests.keyhelpers import make_device_keys

METHODS = {"get", "put", "post", "delete", "patch"}
# Quart's default static route: the app has no static folder, so it only answers 404.
NOT_API = {"static"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def app_routes(services: Services) -> set[tuple[str, str]]:
    """(path in OpenAPI form, method) for every route of the app."""
    routes = set()
    for rule in create_app(services).url_map.iter_rules():
        if rule.endpoint in NOT_API:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, m.lower()) for m in rule.methods or () if m.lower() in METHODS}
    return routes


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def valid(document: dict[str, Any], name: str, instance: object) -> bool:
    """Does *instance* match component schema *name* (refs resolved in the document)?"""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root).is_valid(instance)


async def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """The served document passes the OpenAPI 3.1 validator."""
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


async def test_every_route_of_the_app_is_documented(relay: Relay, document: dict[str, Any]) -> None:
    """Each route in the app's url_map appears with the same methods."""
    assert app_routes(relay.services) - documented(document) == set()


async def test_every_documented_operation_exists(relay: Relay, document: dict[str, Any]) -> None:
    """Each documented path and method is a route of the app."""
    assert documented(document) - app_routes(relay.services) == set()


async def test_exactly_the_documented_bearer_operations_need_a_token(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """Bearer operations answer 401 (documented, with a challenge) without a token; others not."""
    for path, item in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method, op in item.items():
            response = await client.request(method.upper(), url)
            if op.get("security"):
                assert op["security"] == [{"bearerAuth": []}]
                assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
                assert response.status_code == 401, (method, path)
                assert response.headers["WWW-Authenticate"] == "Bearer"
            else:
                assert response.status_code != 401, (method, path)


async def test_every_answer_documents_its_error_codes(document: dict[str, Any]) -> None:
    """Each 4xx/5xx answer is the error body with its codes, and 429s carry Retry-After."""
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue
                schema = answer["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (path, method)
                assert schema["allOf"][1]["properties"]["error"]["enum"], (path, method)
                if status == "429":
                    assert "Retry-After" in answer["headers"], (path, method)


async def test_a_real_key_upload_matches_the_upload_schema(document: dict[str, Any]) -> None:
    """An upload made with real keys validates; a URL-safe or short key does not."""
    upload, _ = make_device_keys(3)
    assert valid(document, "KeyUpload", upload)
    url_safe = {**upload, "identity_key": upload["identity_key"].replace("+", "-") + "-"}
    assert not valid(document, "KeyUpload", url_safe)
    assert not valid(document, "KeyUpload", {**upload, "identity_key": "AAAA"})


async def test_registration_limits_match_the_code(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """What the Credentials schema refuses the server refuses, and what it admits is admitted."""
    for username, password in [
        ("ab", PASSWORD),
        ("a" * 33, PASSWORD),
        ("al ice", PASSWORD),
        ("count", PASSWORD),
        ("alice", "short"),
        ("alice", "p" * 1025),
    ]:
        body = {"username": username, "password": password}
        assert not valid(document, "Credentials", body), body
        assert (await client.post("/api/accounts", json=body)).status_code == 400, body
    for username, password in [("Abc", "p" * 8), ("a" * 32, "p" * 1024), ("a_b.c-d", PASSWORD)]:
        body = {"username": username, "password": password}
        assert valid(document, "Credentials", body), body
        assert (await client.post("/api/accounts", json=body)).status_code == 201, body


async def test_the_prekey_cap_follows_the_configuration(relay_with: RelayFactory) -> None:
    """maxItems of one_time_prekeys is keys.max_prekeys_per_upload of the running relay."""
    _, http = await relay_with(keys__max_prekeys_per_upload=7)
    document = (await http.get("/api/openapi.json")).json()
    upload = document["components"]["schemas"]["KeyUpload"]
    assert upload["properties"]["one_time_prekeys"]["maxItems"] == 7


async def test_metrics_is_documented_only_where_it_is_served(relay_with: RelayFactory) -> None:
    """With http.metrics = false, /metrics is neither served nor documented."""
    relay, http = await relay_with(http__metrics=False)
    document = (await http.get("/api/openapi.json")).json()
    assert "/metrics" not in document["paths"]
    assert (await http.get("/metrics")).status_code == 404
    assert documented(document) == app_routes(relay.services)
