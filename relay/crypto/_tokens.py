"""Access tokens (HS256 JWT, algorithm pinned) and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "relay"
AUDIENCE = "relay"
_REQUIRED = ["sub", "did", "sid", "jti", "iat", "exp", "iss", "aud"]
_CLOCK_SKEW = 60.0  # seconds a token's iat may be ahead of our clock (several processes)


class InvalidToken(Exception):
    """The token is malformed, forged, expired or otherwise unusable.

    ``reason`` is a short stable word for logs and metrics (``expired``,
    ``invalid``); the message never contains the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    device_id: str
    session_id: str
    token_id: str
    issued_at: float
    expires_at: float


class TokenService:
    """Issues and checks access tokens; makes refresh tokens.

    *clock* returns Unix time in seconds (``time.time`` in production); tests
    inject a fake one to expire tokens without waiting.
    """

    def __init__(self, secret: str, access_ttl: float, clock: Callable[[], float]) -> None:
        self._key = secret.encode("utf-8")
        self._ttl = access_ttl
        self._clock = clock

    @property
    def access_ttl(self) -> float:
        return self._ttl

    def issue(
        self, user_id: str, device_id: str, session_id: str, not_after: float | None = None
    ) -> tuple[str, AccessClaims]:
        """A new signed access token and its claims.

        It expires after the access TTL, or at *not_after* (the session's
        absolute end) if that comes first.
        """
        now = int(self._clock())
        expires_at = now + int(self._ttl)
        if not_after is not None:
            expires_at = max(now, min(expires_at, int(not_after)))
        claims = AccessClaims(
            user_id=user_id,
            device_id=device_id,
            session_id=session_id,
            token_id=secrets.token_hex(12),
            issued_at=now,
            expires_at=expires_at,
        )
        payload = {
            "sub": user_id,
            "did": device_id,
            "sid": session_id,
            "jti": claims.token_id,
            "iat": now,
            "exp": int(claims.expires_at),
            "iss": ISSUER,
            "aud": AUDIENCE,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), claims

    def decode(self, token: str) -> AccessClaims:
        """Verify signature (HS256 only), issuer, audience and expiry.

        Raises :class:`InvalidToken`; ``alg=none`` and every other algorithm
        are refused because the accepted list is pinned to HS256.
        """
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": _REQUIRED, "verify_iat": False},
                leeway=0,
            )
            # PyJWT checks exp against its own clock; check ours too so that
            # an injected clock governs expiry in tests and in production.
            now = self._clock()
            issued_at, expires_at = float(payload["iat"]), float(payload["exp"])
            if expires_at <= now:
                raise InvalidToken("expired")
            # Only we sign tokens, and never for longer than the TTL nor in the
            # future: a token that claims otherwise was not issued by this
            # configuration (an old, longer TTL, or a leaked secret at work).
            if expires_at - issued_at > self._ttl or issued_at > now + _CLOCK_SKEW:
                raise InvalidToken("lifetime")
            return AccessClaims(
                user_id=_text(payload["sub"]),
                device_id=_text(payload["did"]),
                session_id=_text(payload["sid"]),
                token_id=_text(payload["jti"]),
                issued_at=issued_at,
                expires_at=expires_at,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except (jwt.InvalidTokenError, TypeError, ValueError):
            raise InvalidToken("invalid") from None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("claim is not a string")
    return value


def new_refresh_token() -> tuple[str, bytes]:
    """A random opaque refresh token and the hash under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    """SHA-256 of the token: 256 random bits need no slow hash or salt."""
    return hashlib.sha256(token.encode("utf-8")).digest()
