"""Device keys: upload, the owner's count, and bundle fetch (X3DH). No transport.

The HTTP routes call :class:`KeyService`; it parses and verifies uploads
(relay/crypto), applies the fetch limits, talks to the Store, and publishes
a :class:`~relay.bus.PrekeysLow` event when a fetch leaves a device short.
Key material never reaches a log line: uploads and fetches log counts and
ids of users and devices only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..bus import Bus, PrekeysLow
from ..config import KeysConfig
from ..crypto import AccessClaims, BadKey, parse_key_upload
from ..errors import InvalidInput, NotFound, TooMany
from ..limits import Limits, names
from ..obs import Logger, Metrics
from ..store import Bundle, KeyIdReused, PrekeyStatus, PutKeysResult, Store
from ._rules import low_on_prekeys, target_key


@dataclass(frozen=True, slots=True)
class Fetched:
    """The bundles of one fetch, each having consumed a one-time prekey."""

    username: str
    bundles: list[Bundle]


class KeyService:
    """The key rules of docs/keys.md over the Store, Limits and Bus ports."""

    def __init__(
        self,
        config: KeysConfig,
        store: Store,
        limits: Limits,
        bus: Bus,
        metrics: Metrics,
        log: Logger,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._limits = limits
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._clock = wall_clock

    async def upload(self, caller: AccessClaims, body: bytes) -> PutKeysResult:
        """Store the caller's device bundle; raises InvalidInput with the code of the fault."""
        try:
            upload = parse_key_upload(body, self._config.max_prekeys_per_upload)
            result = await self._store.put_keys(caller.device_id, upload, self._clock())
        except BadKey as exc:
            self._log.info("keys.upload_refused", device_id=caller.device_id, code=exc.code)
            raise InvalidInput(exc.code, str(exc)) from None
        except KeyIdReused as exc:
            self._log.info("keys.upload_refused", device_id=caller.device_id, code="key_id_reused")
            raise InvalidInput(
                "key_id_reused",
                f"one_time_prekeys: ids {list(exc.key_ids)} were already uploaded under "
                "this identity key; use new ids",
            ) from None
        self._log.info(
            "keys.uploaded",
            user_id=caller.user_id,
            device_id=caller.device_id,
            added=len(upload.one_time_prekeys),
            available=result.one_time_prekeys,
            identity_changed=result.identity_changed,
        )
        if result.identity_changed:
            self._log.warning(
                "keys.identity_changed", user_id=caller.user_id, device_id=caller.device_id
            )
        return result

    async def status(self, device_id: str) -> tuple[PrekeyStatus, float | None]:
        """The device's prekey count and the age of its signed prekey (None: no keys)."""
        status = await self._store.prekey_status(device_id)
        uploaded_at = status.signed_prekey_uploaded_at
        age = None if uploaded_at is None else max(0.0, self._clock() - uploaded_at)
        return status, age

    async def fetch(self, caller: AccessClaims, username: str, device_id: str | None) -> Fetched:
        """Rate-limit, then hand out one bundle per device (each consuming a prekey).

        Raises TooMany (any of the three fetch limits) or NotFound (``user_not_found``,
        ``device_not_found``, ``no_keys``). The limits are taken before the
        store is asked, so a refused fetch consumes no prekey.
        """
        folded = username.lower()
        await self._take(names.KEYS_FETCH, caller.device_id, caller.device_id)
        await self._take(names.KEYS_FETCH_USER, caller.user_id, caller.device_id)
        await self._take(names.KEYS_TARGET, target_key(folded, device_id), caller.device_id)
        user = await self._store.get_user_by_name(folded)
        if user is None:
            raise NotFound("user_not_found", "no such user")
        bundles = await self._store.fetch_bundles(user.id, device_id)
        if not bundles:
            if device_id is not None:
                device = await self._store.get_device(device_id)
                if device is None or device.user_id != user.id:
                    raise NotFound("device_not_found", "this user has no such device")
            raise NotFound("no_keys", "no keys uploaded for this user or device")
        self._metrics.keys_fetched.inc(len(bundles))
        self._log.info(
            "keys.fetched",
            user_id=caller.user_id,
            device_id=caller.device_id,
            target_user_id=user.id,
            bundles=len(bundles),
            exhausted=sum(b.one_time_prekey is None for b in bundles),
        )
        await self._notify_low(bundles)
        return Fetched(user.username, bundles)

    async def _take(self, limit: str, key: str, requester: str) -> None:
        wait = await self._limits.take(limit, key)
        if wait is not None:
            self._metrics.ratelimit_hits.labels(limit).inc()
            self._log.warning(
                f"ratelimit.{limit}", device_id=requester, bucket=key, retry_after=round(wait, 3)
            )
            raise TooMany("rate_limited", "too many key fetches; retry later", retry_after=wait)

    async def _notify_low(self, bundles: list[Bundle]) -> None:
        """Tell each device this fetch left below low water to upload more prekeys.

        The prekeys are already consumed: a bus failure is logged, never turned
        into a failed fetch (the owner still sees the count in GET /api/keys/count).
        """
        for bundle in bundles:
            if not low_on_prekeys(bundle, self._config.low_water):
                continue
            try:
                await self._bus.publish(PrekeysLow(bundle.device_id, bundle.remaining))
            except Exception:
                self._log.warning("keys.notice_failed", device_id=bundle.device_id, exc_info=True)
