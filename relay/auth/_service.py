"""Accounts, login, token refresh and revocation: the rules, not the transport.

Both the HTTP API and the WebSocket gate call :class:`AuthService`; it
talks to the Store and Limits ports and never to a socket.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..bus import Bus
from ..config import AuthConfig
from ..crypto import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    AccessClaims,
    InvalidToken,
    PasswordHasher,
    TokenService,
    hash_refresh_token,
    new_refresh_token,
)
from ..errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, TooMany
from ..limits import Limits, names
from ..obs import Logger, LogSampler, Metrics
from ..store import Device, RefreshOutcome, Session, Store, User, UsernameTaken
from ._login_guard import LoginGuard
from ._revoker import Revoker

USERNAME = re.compile(r"[a-z0-9_.\-]{3,32}")
# Names that collide with API paths (GET /api/keys/count vs /api/keys/{username}).
RESERVED_USERNAMES = frozenset({"count"})
SEEN_EVERY = 60.0  # seconds between two last-seen writes for one session


@dataclass(frozen=True, slots=True)
class Grant:
    """What a successful login or refresh hands the client."""

    access_token: str
    expires_in: int
    refresh_token: str
    user_id: str
    device_id: str
    session_id: str


def normalise_username(username: str) -> str:
    """Case-fold; raise InvalidInput unless 3-32 chars of a-z 0-9 _ . -"""
    # ASCII first: lower() folds some other letters into a-z (the Kelvin sign into k).
    folded = username.lower() if username.isascii() else ""
    if not USERNAME.fullmatch(folded):
        raise InvalidInput(
            "invalid_username", "username must be 3-32 characters of a-z 0-9 _ . -"
        )
    if folded in RESERVED_USERNAMES:
        raise InvalidInput("invalid_username", f"the username {folded!r} is reserved")
    return folded


def _invalid_credentials() -> NotAuthenticated:
    return NotAuthenticated("invalid_credentials", "wrong username or password")


def _taken() -> Conflict:
    return Conflict("username_taken", "that username is taken")


def check_password_length(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidInput(
            "invalid_password",
            f"password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters",
        )


class AuthService:
    """Registers users, logs devices in, rotates and revokes sessions.

    *wall_clock* returns Unix seconds (session expiry is stored in it); rate
    limits and lockouts use the Limits adapter's own clock.
    """

    def __init__(
        self,
        config: AuthConfig,
        store: Store,
        limits: Limits,
        bus: Bus,
        hasher: PasswordHasher,
        tokens: TokenService,
        metrics: Metrics,
        log: Logger,
        wall_clock: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._limits = limits
        self._bus = bus
        self._hasher = hasher
        self._tokens = tokens
        self._metrics = metrics
        self._log = log
        self._clock = wall_clock
        self._sampler = LogSampler(clock)  # one ratelimit.login line per IP per 10 s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.revoker = Revoker(limits, bus, metrics, log, tokens.access_ttl)
        self._guard = LoginGuard(limits)

    async def restore_revocations(self) -> int:
        """Reload sessions revoked within one access-token lifetime.

        Run at start: the in-memory revocation list is empty after a restart,
        and access tokens of sessions revoked just before must stay refused.
        """
        now = self._clock()
        ttl = self._tokens.access_ttl
        sessions = await self._store.revoked_since(now - ttl)
        for session in sessions:
            assert session.revoked_at is not None
            await self._limits.revoke(session.id, session.revoked_at + ttl - now)
        return len(sessions)

    # -- accounts -------------------------------------------------------
    async def register(self, username: str, password: str, *, ip: str | None = None) -> User:
        """Create an account; raises InvalidInput, Forbidden, TooMany or Conflict.

        From the API (*ip* given) registrations are limited per IP, checked
        before any hashing; the operator's ``relay user add`` passes no IP.
        """
        if not self._config.open_registration:
            raise Forbidden("registration_closed", "registration is closed")
        if ip is not None:
            wait = await self._limits.take(names.REGISTER, ip)
            if wait is not None:
                self._metrics.ratelimit_hits.labels("register").inc()
                self._sampler.warn(
                    self._log, "ratelimit.register", ip,
                    retry_after=round(wait, 3),
                )
                raise TooMany(
                    "rate_limited", "too many registrations; try later", retry_after=wait
                )
        name = normalise_username(username)
        check_password_length(password)
        if await self._store.get_user_by_name(name) is not None:
            raise _taken()  # before hashing: a taken name costs no CPU
        password_hash = await self._hasher.hash(password)
        try:
            user = await self._store.create_user(name, password_hash, self._clock())
        except UsernameTaken:
            raise _taken() from None
        self._log.info("auth.account_created", user_id=user.id, username=name)
        return user

    # -- login ----------------------------------------------------------
    async def login(
        self,
        username: str,
        password: str,
        *,
        ip: str,
        device_id: str | None = None,
        device_name: str | None = None,
    ) -> Grant:
        """Check the credentials under the IP limit and the lockouts (see _login_guard)."""
        if len(password) > MAX_PASSWORD_CHARS:
            raise InvalidInput("invalid_password", "password is too long")
        name = username.lower() if username.isascii() else ""
        wait = await self._limits.take(names.LOGIN, ip)
        if wait is not None:
            self._metrics.ratelimit_hits.labels("login").inc()
            self._metrics.logins.labels("rate_limited").inc()
            self._sampler.warn(
                self._log, "ratelimit.login", ip, retry_after=round(wait, 3)
            )
            raise TooMany("rate_limited", "too many login attempts", retry_after=wait)
        if not USERNAME.fullmatch(name):
            # Cannot exist, and the format is public: refuse without hashing or counting.
            self._metrics.logins.labels("invalid_credentials").inc()
            raise _invalid_credentials()
        user = await self._store.get_user_by_name(name)
        known_device = user is not None and await self._owns_device(user, device_id)
        verdict = await self._guard.check(name, ip, known_device)
        if verdict is not None:
            self._metrics.ratelimit_hits.labels("lockout").inc()
            self._metrics.logins.labels("locked_out").inc()
            self._sampler.warn(
                self._log, "auth.locked_out", f"{name}|{ip}",
                username=name, reason=verdict.reason,
            )
            raise TooMany(
                "locked_out", "too many failed logins; try later", retry_after=verdict.retry_after
            )
        if not await self._hasher.verify(user.password_hash if user else None, password):
            await self._fail(name, ip)
        assert user is not None
        await self._guard.succeeded(name, ip)
        device = await self._device_for(user, device_id, device_name)
        grant = await self._open_session(user, device)
        self._metrics.logins.labels("success").inc()
        self._log.info(
            "auth.login", user_id=user.id, device_id=device.id, session_id=grant.session_id, ip=ip
        )
        return grant

    async def _owns_device(self, user: User, device_id: str | None) -> bool:
        if device_id is None:
            return False
        device = await self._store.get_device(device_id)
        return device is not None and device.user_id == user.id

    async def _fail(self, name: str, ip: str) -> None:
        pair_lock, guard = await self._guard.failed(name, ip)
        self._metrics.logins.labels("invalid_credentials").inc()
        self._log.warning("auth.login_failed", username=name, ip=ip)
        if pair_lock is not None:
            self._log.warning("auth.locked_out", username=name, ip=ip, duration=pair_lock)
        if guard is not None:
            self._log.warning("auth.username_guarded", username=name, duration=guard)
        raise _invalid_credentials()

    async def _device_for(self, user: User, device_id: str | None, name: str | None) -> Device:
        now = self._clock()
        if device_id is not None:
            device = await self._store.get_device(device_id)
            if device is None or device.user_id != user.id:
                raise NotFound("device_not_found", "no such device on this account")
            return device
        if await self._store.count_devices(user.id) >= self._config.max_devices_per_user:
            raise Conflict("too_many_devices", "the account has its maximum number of devices")
        device = await self._store.create_device(user.id, (name or "device")[:64], now)
        self._log.info("auth.device_registered", user_id=user.id, device_id=device.id)
        return device

    async def _open_session(self, user: User, device: Device) -> Grant:
        now = self._clock()
        refresh, refresh_hash = new_refresh_token()
        lifetime = min(self._config.refresh_token_ttl, self._config.session_max_age)
        session = await self._store.create_session(
            user.id, device.id, refresh_hash, now, now + lifetime
        )
        return self._grant(session, refresh)

    def _grant(self, session: Session, refresh: str) -> Grant:
        access, claims = self._tokens.issue(
            session.user_id,
            session.device_id,
            session.id,
            not_after=session.created_at + self._config.session_max_age,
        )
        return Grant(
            access_token=access,
            expires_in=int(claims.expires_at - claims.issued_at),
            refresh_token=refresh,
            user_id=session.user_id,
            device_id=session.device_id,
            session_id=session.id,
        )

    # -- tokens ---------------------------------------------------------
    async def refresh(self, refresh_token: str) -> Grant:
        """Spend *refresh_token* for a new pair; a spent one revokes the session."""
        now = self._clock()
        new, new_hash = new_refresh_token()
        result = await self._store.rotate_refresh(
            hash_refresh_token(refresh_token),
            new_hash,
            now,
            now + self._config.refresh_token_ttl,
            max_age=self._config.session_max_age,
        )
        if result.outcome is RefreshOutcome.ROTATED:
            assert result.session is not None
            return self._grant(result.session, new)
        if result.outcome is RefreshOutcome.REUSED:
            assert result.session is not None
            await self._revoke_tokens(result.session.id, "refresh_reuse")
        raise NotAuthenticated("invalid_token", "the refresh token is not valid")

    async def authenticate(self, token: str) -> AccessClaims:
        """Claims of a valid, unrevoked access token; raises InvalidToken."""
        claims = self._tokens.decode(token)
        if await self._limits.is_revoked(claims.session_id):
            raise InvalidToken("revoked")
        return claims

    # -- revocation -----------------------------------------------------
    async def revoke_session(self, session_id: str, reason: str, user_id: str | None) -> bool:
        """Revoke the session (of *user_id* if given); False if there was none."""
        session = await self._store.revoke_session(session_id, self._clock(), user_id)
        if session is None:
            return False
        await self._revoke_tokens(session.id, reason)
        return True

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Delete the device with its keys, messages and sessions."""
        sessions = await self._store.delete_device(user_id, device_id, self._clock())
        if sessions is None:
            return False
        await self.revoker.revoke(sessions, "device_deleted")
        self._log.info("auth.device_deleted", user_id=user_id, device_id=device_id)
        return True

    async def _revoke_tokens(self, session_id: str, reason: str) -> None:
        await self.revoker.revoke([session_id], reason)

    # -- last seen ------------------------------------------------------
    async def note_seen(self, session_id: str) -> None:
        """Record that the session (and its device) was used now; at most once a minute.

        Called on authenticated requests and WebSocket connects and closes;
        the throttle keeps it from costing a store write per request.
        """
        now = self._clock()  # wall time: it is what is stored, and a rate is a rate
        last = self._seen.get(session_id)
        if last is not None and 0 <= now - last < SEEN_EVERY:
            return
        self._seen[session_id] = now
        self._seen.move_to_end(session_id)
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        await self._store.touch_session(session_id, now)
