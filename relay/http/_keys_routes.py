"""Device keys: prekey upload, the caller's prekey count, bundle fetch (X3DH).

Key material never reaches a log line: uploads and fetches log counts and ids
of users and devices only.
"""

from __future__ import annotations

from quart import Quart, request
from quart_trio.wrappers.response import TrioResponse as Response

from ..bus import PrekeysLow
from ..crypto import BadKey, bundle_dict, parse_key_upload
from ..keys import low_on_prekeys, target_key
from ..limits import names
from ..services import Services
from ..store import Bundle, KeyIdReused
from ._auth_routes import bearer_claims, requires_auth
from ._errors import ApiError, json_response


def register_keys_routes(app: Quart, services: Services) -> None:
    store, log, config = services.store, services.log, services.config.keys

    @app.put("/api/keys")
    @requires_auth(services)
    async def upload_keys() -> Response:
        claims = bearer_claims()
        data = await request.get_data(cache=False)
        assert isinstance(data, bytes)
        try:
            upload = parse_key_upload(data, config.max_prekeys_per_upload)
        except BadKey as exc:
            log.info("keys.upload_refused", device_id=claims.device_id, code=exc.code)
            raise ApiError(400, exc.code, str(exc)) from None
        try:
            result = await store.put_keys(claims.device_id, upload, services.wall_clock())
        except KeyIdReused as exc:
            log.info("keys.upload_refused", device_id=claims.device_id, code="key_id_reused")
            raise ApiError(
                400,
                "key_id_reused",
                f"one_time_prekeys: ids {list(exc.key_ids)} were already uploaded under "
                "this identity key; use new ids",
            ) from None
        log.info(
            "keys.uploaded",
            user_id=claims.user_id,
            device_id=claims.device_id,
            added=len(upload.one_time_prekeys),
            available=result.one_time_prekeys,
            identity_changed=result.identity_changed,
        )
        if result.identity_changed:
            log.warning("keys.identity_changed", user_id=claims.user_id, device_id=claims.device_id)
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
        claims = bearer_claims()
        status = await store.prekey_status(claims.device_id)
        uploaded_at = status.signed_prekey_uploaded_at
        age = None if uploaded_at is None else max(0.0, services.wall_clock() - uploaded_at)
        return json_response(
            {
                "one_time_prekeys": status.one_time_prekeys,
                "signed_prekey_uploaded_at": uploaded_at,
                "signed_prekey_age": age,
            }
        )

    @app.get("/api/keys/<username>")
    @requires_auth(services)
    async def fetch_user_bundles(username: str) -> Response:
        return await _fetch(services, username, None)

    @app.get("/api/keys/<username>/<device_id>")
    @requires_auth(services)
    async def fetch_device_bundle(username: str, device_id: str) -> Response:
        return await _fetch(services, username, device_id)


async def _fetch(services: Services, username: str, device_id: str | None) -> Response:
    """Rate-limit, then hand out one bundle per device (each consuming a prekey)."""
    claims = bearer_claims()
    folded = username.lower()
    target = target_key(folded, device_id)
    # Both limits before the store: a refused fetch consumes no prekey.
    await _take(services, names.KEYS_FETCH, claims.device_id, requester=claims.device_id)
    await _take(services, names.KEYS_TARGET, target, requester=claims.device_id)

    user = await services.store.get_user_by_name(folded)
    if user is None:
        raise ApiError(404, "user_not_found", "no such user")
    bundles = await services.store.fetch_bundles(user.id, device_id)
    if not bundles:
        if device_id is not None:
            device = await services.store.get_device(device_id)
            if device is None or device.user_id != user.id:
                raise ApiError(404, "device_not_found", "this user has no such device")
        raise ApiError(404, "no_keys", "no keys uploaded for this user or device")

    services.metrics.keys_fetched.inc(len(bundles))
    services.log.info(
        "keys.fetched",
        user_id=claims.user_id,
        device_id=claims.device_id,
        target_user_id=user.id,
        bundles=len(bundles),
        exhausted=sum(b.one_time_prekey is None for b in bundles),
    )
    await _notify_low(services, bundles)
    return json_response({"username": user.username, "devices": [bundle_dict(b) for b in bundles]})


async def _take(services: Services, limit: str, key: str, *, requester: str) -> None:
    wait = await services.limits.take(limit, key)
    if wait is not None:
        services.metrics.ratelimit_hits.labels(limit).inc()
        services.log.warning(
            f"ratelimit.{limit}", device_id=requester, bucket=key, retry_after=round(wait, 3)
        )
        raise ApiError(429, "rate_limited", "too many key fetches; retry later", retry_after=wait)


async def _notify_low(services: Services, bundles: list[Bundle]) -> None:
    """Tell each device this fetch left below low water to upload more prekeys.

    The prekeys are already consumed: a bus failure is logged, never turned
    into a failed fetch (the owner still sees the count in GET /api/keys/count).
    """
    for bundle in bundles:
        if not low_on_prekeys(bundle, services.config.keys.low_water):
            continue
        try:
            await services.bus.publish(PrekeysLow(bundle.device_id, bundle.remaining))
        except Exception:
            services.log.warning("keys.notice_failed", device_id=bundle.device_id, exc_info=True)
