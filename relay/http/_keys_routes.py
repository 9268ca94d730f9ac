"""Device keys over HTTP: prekey upload, the caller's prekey count, bundle fetch.

The rules are :class:`relay.keys.KeyService`'s; this module reads requests
and renders bundles (keys in standard base64).
"""

from __future__ import annotations

from typing import Any

from quart import Quart, request
from quart_trio.wrappers.response import TrioResponse as Response

from ..crypto import encode_b64
from ..services import Services
from ..store import Bundle
from ._auth_routes import bearer_claims, requires_auth
from ._errors import json_response


def register_keys_routes(app: Quart, services: Services) -> None:
    keys = services.keys

    @app.put("/api/keys")
    @requires_auth(services)
    async def upload_keys() -> Response:
        data = await request.get_data(cache=False)
        assert isinstance(data, bytes)
        result = await keys.upload(bearer_claims(), data)
        return json_response(
            {
                "one_time_prekeys": result.one_time_prekeys,
                "identity_changed": result.identity_changed,
            }
        )

    # A static segment outranks a variable one in Werkzeug's router whatever the
    # order; registering it first keeps that visible. "count" is a reserved
    # username for that reason (docs/decisions/0004-keys.md).
    @app.get("/api/keys/count")
    @requires_auth(services)
    async def prekey_count() -> Response:
        status, age = await keys.status(bearer_claims().device_id)
        return json_response(
            {
                "one_time_prekeys": status.one_time_prekeys,
                "signed_prekey_uploaded_at": status.signed_prekey_uploaded_at,
                "signed_prekey_age": age,
            }
        )

    @app.get("/api/keys/<username>")
    @requires_auth(services)
    async def fetch_user_bundles(username: str) -> Response:
        fetched = await keys.fetch(bearer_claims(), username, None)
        return json_response(
            {"username": fetched.username, "devices": [bundle_dict(b) for b in fetched.bundles]}
        )

    @app.get("/api/keys/<username>/<device_id>")
    @requires_auth(services)
    async def fetch_device_bundle(username: str, device_id: str) -> Response:
        fetched = await keys.fetch(bearer_claims(), username, device_id)
        return json_response(
            {"username": fetched.username, "devices": [bundle_dict(b) for b in fetched.bundles]}
        )


def bundle_dict(bundle: Bundle) -> dict[str, Any]:
    """The JSON-ready form of a fetched bundle, keys in standard base64.

    ``one_time_prekey`` is None when the device had none left; ``remaining``
    is not included (it is the owner's business, not the fetcher's).
    """
    spk = bundle.signed_prekey
    otk = bundle.one_time_prekey
    return {
        "device_id": bundle.device_id,
        "identity_key": encode_b64(bundle.identity_key),
        "signed_prekey": {
            "key_id": spk.key_id,
            "public_key": encode_b64(spk.public_key),
            "signature": encode_b64(spk.signature),
        },
        "one_time_prekey": None
        if otk is None
        else {"key_id": otk.key_id, "public_key": encode_b64(otk.public_key)},
    }
