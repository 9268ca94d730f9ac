"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json``.

To document a new endpoint, add one entry to :func:`_paths` (a path item: its
methods, parameters, body and answers, built with the helpers below).
``tests/integration/test_openapi.py`` fails while a route of the app is missing
here or a documented one is missing in the app, and the schemathesis run in
``tests/fuzz/`` checks every answer of a live relay against this document.

The request schemas say what the code refuses: the msgspec structs the routes
decode with give their own schemas, and the rules the services add on top
(usernames, password lengths, canonical base64 keys, the prekey batch cap, the
body cap) are written in from the same constants and the configuration.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Quart
from quart_trio.wrappers.response import TrioResponse as Response

from .. import __version__
from ..config import Config
from ..crypto import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from ..services import Services
from ._bodies import Credentials, LoginBody, PasswordChange, PasswordConfirmation, RefreshBody

OPENAPI_PATH = "/api/openapi.json"

Json = dict[str, Any]

_MAX_KEY_ID = 2**31 - 1
# Canonical padded standard base64 of exactly 32 and 64 bytes: the last
# character before the padding carries only zero bits past the data.
_B64_32 = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
_B64_64 = "^[A-Za-z0-9+/]{85}[AQgw]==$"
# relay.auth.USERNAME after case folding; `count` is reserved (any case).
_USERNAME = "^[A-Za-z0-9_.-]{3,32}$"
_RESERVED_USERNAME = "^[Cc][Oo][Uu][Nn][Tt]$"


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Json | None = None) -> Json:
    answer: Json = {"description": description, "headers": _request_id_header()}
    if schema is not None:
        answer["content"] = _json(schema)
    return answer


def _request_id_header() -> Json:
    return {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}


def _error(description: str, *codes: str, headers: Json | None = None) -> Json:
    """An error answer: ``{"error": one of *codes*, "message": text}``."""
    schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return {
        "description": description,
        "headers": {**_request_id_header(), **(headers or {})},
        "content": _json(schema),
    }


def _retry_later(description: str, *codes: str) -> Json:
    retry_after = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return _error(description, *codes, headers=retry_after)


def _body(schema: Json, description: str) -> Json:
    return {"required": True, "description": description, "content": _json(schema)}


def _body_errors(*codes_400: str) -> Json:
    """The answers of every route that reads a JSON body."""
    return {
        "400": _error(
            "The body is not UTF-8 JSON (`invalid_json`: nested too deeply), or a value is "
            "refused.",
            "malformed_json",
            "invalid_json",
            "invalid_request",
            *codes_400,
        ),
        "408": _error(
            "The body did not arrive within `http.request_timeout`; the connection is closed.",
            "request_timeout",
        ),
        "413": _error(
            "The body is over `http.max_body_bytes`; the connection is closed.", "body_too_large"
        ),
    }


def _bearer(operation: Json, *more_401: str) -> Json:
    """*operation* behind the Bearer check, with its 401 (and the route's own 401 codes)."""
    if more_401:
        challenge = {
            "description": "`Bearer`, when the error is `invalid_token`.",
            "schema": {"type": "string", "const": "Bearer"},
        }
        description = "No, malformed, forged, expired or revoked access token; or " + ", ".join(
            more_401
        )
    else:
        challenge = {"$ref": "#/components/headers/WWW-Authenticate"}
        description = "No, malformed, forged, expired or revoked access token."
    unauthorized = _error(
        description, "invalid_token", *more_401, headers={"WWW-Authenticate": challenge}
    )
    return {
        **operation,
        "security": [{"bearerAuth": []}],
        "responses": {**operation["responses"], "401": unauthorized},
    }


def _path_param(name: str, description: str, schema: Json | None = None) -> Json:
    # A path segment: at least one character (Werkzeug's default converter).
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def _operation(summary: str, responses: Json, *, uses_store: bool = True, **more: Any) -> Json:
    """An operation; one that *uses_store* may also answer 503 ``store_unavailable``."""
    if uses_store:
        responses = {
            **responses,
            "503": _retry_later(
                "The store is unavailable (locked, full or closed); nothing was changed.",
                "store_unavailable",
            ),
        }
    return {
        "summary": summary,
        "parameters": [{"$ref": "#/components/parameters/X-Request-ID"}],
        "responses": responses,
        **more,
    }


# --- paths: one entry per path ------------------------------------------------------


def _paths(config: Config) -> Json:
    paths = {
        "/api/accounts": _accounts(),
        "/api/login": _login(),
        "/api/token/refresh": _token_refresh(),
        "/api/logout": _logout(),
        "/api/logout/all": _logout_all(),
        "/api/account/password": _account_password(),
        "/api/account/delete": _account_delete(),
        "/api/devices": _devices(),
        "/api/devices/{device_id}": _device(),
        "/api/sessions": _sessions(),
        "/api/sessions/{session_id}": _session(),
        "/api/keys": _keys(),
        "/api/keys/count": _keys_count(),
        "/api/keys/{username}": _keys_of_user(),
        "/api/keys/{username}/{device_id}": _keys_of_device(),
        "/healthz": _healthz(),
        "/readyz": _readyz(),
        "/metrics": _metrics(),
        OPENAPI_PATH: _openapi(),
    }
    if not config.http.metrics:  # then only on the admin port
        del paths["/metrics"]
    return paths


def _accounts() -> Json:
    return {
        "post": _operation(
            "Register an account",
            {
                "201": _ok("The account was created.", _ref("Account")),
                **_body_errors("invalid_username", "invalid_password"),
                "403": _error(
                    "Registration is closed (`auth.open_registration = false`).",
                    "registration_closed",
                ),
                "409": _error("The username is taken.", "username_taken"),
                "429": _retry_later("Over the per-IP registration limit.", "rate_limited"),
            },
            requestBody=_body(_ref("Credentials"), "The new account's username and password."),
        )
    }


def _login() -> Json:
    return {
        "post": _operation(
            "Log in: open a session on a new or an existing device",
            {
                "200": _ok("A token pair for the new session.", _ref("Grant")),
                **_body_errors("invalid_password"),
                "401": _error(
                    "Wrong password or unknown user (the same answer, in the same time).",
                    "invalid_credentials",
                ),
                "404": _error("`device_id` is not a device of this account.", "device_not_found"),
                "409": _error(
                    "The account has `auth.max_devices_per_user` devices.", "too_many_devices"
                ),
                "429": _retry_later(
                    "Over the per-IP login limit, or the username is locked out.",
                    "rate_limited",
                    "locked_out",
                ),
            },
            requestBody=_body(
                _ref("LoginBody"),
                "Without `device_id` a new device (named `device_name`) is registered.",
            ),
        )
    }


def _token_refresh() -> Json:
    return {
        "post": _operation(
            "Spend a refresh token for a new token pair",
            {
                "200": _ok(
                    "A new token pair; the presented refresh token is spent.", _ref("Grant")
                ),
                **_body_errors(),
                "401": _error(
                    "Unknown, expired or spent refresh token (a spent one revokes its session).",
                    "invalid_token",
                ),
            },
            requestBody=_body(_ref("RefreshBody"), "The refresh token to spend."),
        )
    }


def _logout() -> Json:
    return {
        "post": _bearer(
            _operation(
                "Revoke the caller's session (tokens and WebSockets)",
                {"204": _ok("The session is revoked.")},
            )
        )
    }


def _logout_all() -> Json:
    return {
        "post": _bearer(
            _operation(
                "Revoke every session of the account, the caller's too",
                {"204": _ok("Every session is revoked; their WebSockets close with 4003.")},
            )
        )
    }


_CONFIRM_LOCKED = (
    "Too many failed logins or confirmations for this username from this address.",
    "locked_out",
)


def _account_password() -> Json:
    return {
        "post": _bearer(
            _operation(
                "Change the password; every other session of the account ends",
                {
                    "204": _ok("The password is changed; the caller's session stays."),
                    **_body_errors("invalid_password"),
                    "429": _retry_later(*_CONFIRM_LOCKED),
                },
                requestBody=_body(
                    _ref("PasswordChange"),
                    "A wrong `old_password` counts as a failed login (the same lockouts).",
                ),
            ),
            "invalid_credentials",
        )
    }


def _account_delete() -> Json:
    return {
        "post": _bearer(
            _operation(
                "Delete the account with its devices, sessions, keys and messages",
                {
                    "204": _ok("The account is deleted; its username is quarantined."),
                    **_body_errors(),
                    "429": _retry_later(*_CONFIRM_LOCKED),
                },
                requestBody=_body(
                    _ref("PasswordConfirmation"),
                    "The account's password; a wrong one counts as a failed login.",
                ),
            ),
            "invalid_credentials",
        )
    }


def _devices() -> Json:
    return {
        "get": _bearer(
            _operation(
                "The account's devices, oldest first",
                {"200": _ok("The devices.", _ref("DeviceList"))},
            )
        )
    }


def _device() -> Json:
    return {
        "delete": _bearer(
            _operation(
                "Delete a device with its keys, queued messages and sessions",
                {
                    "204": _ok("The device is deleted."),
                    "404": _error("No such device on this account.", "device_not_found"),
                },
                parameters=[
                    {"$ref": "#/components/parameters/X-Request-ID"},
                    _path_param("device_id", "A device id of the caller's account."),
                ],
            )
        )
    }


def _sessions() -> Json:
    return {
        "get": _bearer(
            _operation(
                "The account's active sessions on all its devices, oldest first",
                {"200": _ok("The sessions.", _ref("SessionList"))},
            )
        )
    }


def _session() -> Json:
    return {
        "delete": _bearer(
            _operation(
                "Revoke one session of the account",
                {
                    "204": _ok("The session is revoked."),
                    "404": _error("No such active session on this account.", "session_not_found"),
                },
                parameters=[
                    {"$ref": "#/components/parameters/X-Request-ID"},
                    _path_param("session_id", "A session id of the caller's account."),
                ],
            )
        )
    }


def _keys() -> Json:
    return {
        "put": _bearer(
            _operation(
                "Upload the caller's device bundle (see docs/keys.md)",
                {
                    "200": _ok("The upload is stored.", _ref("KeysUploaded")),
                    **_body_errors(
                        "too_many_prekeys",
                        "bad_base64",
                        "bad_key_length",
                        "duplicate_key_id",
                        "bad_signature",
                        "key_id_reused",
                    ),
                },
                requestBody=_body(
                    _ref("KeyUpload"),
                    "All or nothing: a refused upload changes nothing. Key ids must be new "
                    "for the identity key; the signature must verify.",
                ),
            )
        )
    }


def _keys_count() -> Json:
    return {
        "get": _bearer(
            _operation(
                "The caller's device: unused one-time prekeys and the signed prekey's age",
                {"200": _ok("The caller's prekey status.", _ref("PrekeyCount"))},
            )
        )
    }


_FETCH_LIMITED = ("Over a key-fetch rate limit.", "rate_limited")


def _keys_of_user() -> Json:
    username = _path_param(
        "username",
        "A username (case-insensitive). `count` is GET /api/keys/count.",
        {"type": "string", "minLength": 1, "not": {"const": "count"}},
    )
    return {
        "get": _bearer(
            _operation(
                "Fetch a bundle per device of a user (consumes one one-time prekey each)",
                {
                    "200": _ok("One bundle per device that uploaded keys.", _ref("Bundles")),
                    "404": _error("No such user, or no keys.", "user_not_found", "no_keys"),
                    "429": _retry_later(*_FETCH_LIMITED),
                },
                parameters=[{"$ref": "#/components/parameters/X-Request-ID"}, username],
            )
        )
    }


def _keys_of_device() -> Json:
    return {
        "get": _bearer(
            _operation(
                "Fetch the bundle of one device of a user (consumes one one-time prekey)",
                {
                    "200": _ok("The device's bundle.", _ref("Bundles")),
                    "404": _error(
                        "No such user, no such device of the user, or no keys.",
                        "user_not_found",
                        "device_not_found",
                        "no_keys",
                    ),
                    "429": _retry_later(*_FETCH_LIMITED),
                },
                parameters=[
                    {"$ref": "#/components/parameters/X-Request-ID"},
                    _path_param("username", "A username (case-insensitive)."),
                    _path_param("device_id", "A device id of that user."),
                ],
            )
        )
    }


def _healthz() -> Json:
    health = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
    return {
        "get": _operation("Liveness", {"200": _ok("The process serves.", health)}, uses_store=False)
    }


def _readyz() -> Json:
    part = {"enum": ["ok", "unreachable"]}
    ready = {
        "type": "object",
        "required": ["status", "store", "bus", "limits"],
        "properties": {
            "status": {"enum": ["ready", "unavailable"]},
            "store": part,
            "bus": part,
            "limits": part,
        },
    }
    return {
        "get": _operation(
            "Readiness: the store, the bus and the limits answer within 2 s",
            {
                "200": _ok("Ready.", ready),
                "503": _ok("Not ready; names the part that did not answer.", ready),
            },
            uses_store=False,
        )
    }


def _metrics() -> Json:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "get": _operation(
            "Prometheus metrics",
            {"200": {**_ok("The Prometheus text format."), "content": text}},
            uses_store=False,
        )
    }


def _openapi() -> Json:
    return {
        "get": _operation("This document", {"200": _ok("OpenAPI 3.1, JSON.", {"type": "object"})})
    }


# --- components ---------------------------------------------------------------------


def _object(properties: Json, *, optional: tuple[str, ...] = ()) -> Json:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties}


_STRING: Json = {"type": "string"}
_TIME: Json = {"type": "number", "description": "Unix seconds"}


def _schemas(config: Config) -> Json:
    _, bodies = msgspec.json.schema_components(
        [Credentials, LoginBody, RefreshBody, PasswordChange, PasswordConfirmation],
        ref_template="#/components/schemas/{name}",
    )
    credentials = bodies["Credentials"]["properties"]
    credentials["username"].update(
        minLength=3,
        maxLength=32,
        pattern=_USERNAME,
        description="3-32 of a-z 0-9 _ . - (case-folded); `count` is reserved",
        **{"not": {"pattern": _RESERVED_USERNAME}},
    )
    credentials["password"].update(minLength=MIN_PASSWORD_CHARS, maxLength=MAX_PASSWORD_CHARS)
    bodies["LoginBody"]["properties"]["password"]["maxLength"] = MAX_PASSWORD_CHARS
    bodies["PasswordChange"]["properties"]["new_password"].update(
        minLength=MIN_PASSWORD_CHARS, maxLength=MAX_PASSWORD_CHARS
    )

    key_32 = {"type": "string", "pattern": _B64_32, "description": "32 bytes, standard base64"}
    key_id = {"type": "integer", "minimum": 0, "maximum": _MAX_KEY_ID}
    signed_prekey = _object(
        {
            "key_id": key_id,
            "public_key": {**key_32, "description": "X25519 public key, standard base64"},
            "signature": {
                "type": "string",
                "pattern": _B64_64,
                "description": "Ed25519 signature of the raw public key by the identity key",
            },
        }
    )
    one_time_prekey = _object({"key_id": key_id, "public_key": key_32})
    bundle = _object(
        {
            "device_id": _STRING,
            "identity_key": key_32,
            "signed_prekey": _ref("SignedPrekey"),
            "one_time_prekey": {"anyOf": [_ref("OneTimePrekey"), {"type": "null"}]},
        }
    )
    grant = _object(
        {
            "access_token": _STRING,
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "minimum": 0},
            "refresh_token": _STRING,
            "user_id": _STRING,
            "device_id": _STRING,
            "session_id": _STRING,
        }
    )
    device = _object(
        {
            "device_id": _STRING,
            "name": _STRING,
            "created_at": _TIME,
            "last_seen_at": _TIME,
            "current": {"type": "boolean"},
        }
    )
    session = _object(
        {
            "session_id": _STRING,
            "device_id": _STRING,
            "created_at": _TIME,
            "last_used_at": _TIME,
            "expires_at": _TIME,
            "current": {"type": "boolean"},
        }
    )
    maybe_time = {"anyOf": [_TIME, {"type": "null"}]}
    return {
        "Error": _object({"error": _STRING, "message": _STRING}),
        **bodies,
        "KeyUpload": _object(
            {
                "identity_key": {**key_32, "description": "Ed25519 public key, standard base64"},
                "signed_prekey": _ref("SignedPrekey"),
                "one_time_prekeys": {
                    "type": "array",
                    "maxItems": config.keys.max_prekeys_per_upload,
                    "items": _ref("OneTimePrekey"),
                    "description": "Distinct key ids, new for this identity key",
                },
            }
        ),
        "SignedPrekey": signed_prekey,
        "OneTimePrekey": one_time_prekey,
        "Account": _object({"user_id": _STRING, "username": _STRING}),
        "Grant": grant,
        "DeviceList": _object({"devices": {"type": "array", "items": device}}),
        "SessionList": _object({"sessions": {"type": "array", "items": session}}),
        "KeysUploaded": _object(
            {
                "one_time_prekeys": {"type": "integer", "minimum": 0},
                "identity_changed": {"type": "boolean"},
            }
        ),
        "PrekeyCount": _object(
            {
                "one_time_prekeys": {"type": "integer", "minimum": 0},
                "signed_prekey_uploaded_at": maybe_time,
                "signed_prekey_age": maybe_time,
            }
        ),
        "Bundles": _object({"username": _STRING, "devices": {"type": "array", "items": bundle}}),
    }


def openapi_document(config: Config) -> Json:
    """The OpenAPI 3.1 document for an app built with *config*."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay HTTP API",
            "version": __version__,
            "description": (
                "Accounts, login, tokens, sessions, devices and device keys; see "
                "docs/http-api.md and docs/keys.md. Request bodies are JSON (any "
                "Content-Type); unknown fields are ignored. Every response carries "
                'X-Request-ID; errors are {"error", "message"}. A 500 '
                "`internal_error` is a bug. CORS preflight (OPTIONS) answers 204 on "
                "every path for allowed origins. Before any of this, a connection over "
                "`http.max_connections_per_ip` or `http.max_connections` is answered "
                "429 `too_many_connections` or 503 `overloaded` (with Retry-After, without "
                "X-Request-ID) and closed. The WebSocket protocol is in docs/protocol.md."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": _paths(config),
        "components": {
            "schemas": _schemas(config),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access_token from POST /api/login or /api/token/refresh.",
                }
            },
            "parameters": {
                "X-Request-ID": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Echoed when 1-128 printable ASCII characters, else replaced.",
                    "schema": {"type": "string"},
                }
            },
            "headers": {
                "X-Request-ID": {
                    "required": True,
                    "description": "The request's id (the client's, if sane); on every log line.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                "Retry-After": {
                    "required": True,
                    "description": "Whole seconds to wait, rounded up.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "WWW-Authenticate": {
                    "required": True,
                    "schema": {"type": "string", "const": "Bearer"},
                },
            },
        },
    }


def register_openapi_route(app: Quart, services: Services) -> None:
    """Serve the document at ``GET /api/openapi.json`` (built once, per app)."""
    document = msgspec.json.encode(openapi_document(services.config))

    @app.get(OPENAPI_PATH)
    async def openapi() -> Response:
        return Response(document, content_type="application/json")
