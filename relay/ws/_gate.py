"""The handshake gate: cheapest refusal first, all before the upgrade.

Order: per-IP token bucket (429 + Retry-After) → path (404) → shutdown and
connection caps (503) → Origin allowlist (403) → token (401). The pure
helpers (:func:`split_target`, :func:`token_from`) take values and return
values; :class:`HandshakeGate` adds the limiter and the token check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

from ..auth import AuthService, bearer_token, origin_allowed
from ..config import WsConfig
from ..crypto import AccessClaims, InvalidToken
from ..limits import Limits, names, retry_after_header
from ..obs import Logger, LogSampler, Metrics

WS_PATH = "/ws"
MAX_TOKEN_CHARS = 4096


class Refusal(Exception):
    """Refuse the handshake with this HTTP status (and headers).

    ``outcome`` is the metrics label (``rate_limited``, ``origin_rejected``...).
    """

    def __init__(
        self, status: int, outcome: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(outcome)
        self.status = status
        self.outcome = outcome
        self.headers = list(headers)


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """The request target's path and its query parameters.

    Raises Refusal(400) for a query with more than 16 fields: nothing
    legitimate sends that many, and parsing them is work for an attacker.
    """
    path, _, query = target.partition("?")
    try:
        return path, parse_qs(query, max_num_fields=16) if query else {}
    except ValueError:
        raise Refusal(400, "bad_request") from None


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header *name* (lower-case bytes), decoded as Latin-1."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def token_from(
    headers: Sequence[tuple[bytes, bytes]], query: dict[str, list[str]]
) -> tuple[str | None, str]:
    """The token and where it came from: ``bearer``, ``query`` or ``none``.

    ``Authorization`` with a scheme other than Bearer counts as no token;
    the query form is ``access_token=<jwt>`` (for browsers).
    """
    token = bearer_token(header(headers, b"authorization"))
    if token is not None:
        return token, "bearer"
    values = query.get("access_token")
    if values and values[0]:
        return values[0], "query"
    return None, "none"


class HandshakeGate:
    """Decides each handshake; raises :class:`Refusal` or returns the claims.

    Returns None when the client presented no token: it then has
    ``ws.auth_timeout`` to send an ``auth`` frame after the upgrade.
    """

    def __init__(
        self,
        config: WsConfig,
        limits: Limits,
        auth: AuthService,
        metrics: Metrics,
        log: Logger,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._limits = limits
        self._auth = auth
        self._metrics = metrics
        self._log = log
        self.sampler = LogSampler(clock)  # also the shed path's, in the server
        self.shutting_down = False

    def warn(self, event: str, ip: str, **fields: object) -> None:
        """Log a refusal, at most once per event and IP every 10 s (with a count)."""
        self.sampler.warn(self._log, event, ip, **fields)

    async def check(
        self,
        ip: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        full: bool,
    ) -> AccessClaims | None:
        wait = await self._limits.take(names.HANDSHAKE, ip)
        if wait is not None:
            self.warn("ratelimit.handshake", ip, retry_after=round(wait, 3))
            retry = retry_after_header(wait).encode()
            raise Refusal(429, "rate_limited", ((b"Retry-After", retry),))
        path, query = split_target(target)
        if path != WS_PATH:
            raise Refusal(404, "not_found")
        if self.shutting_down or full:
            self.warn("ws.overloaded", ip, shutting_down=self.shutting_down)
            raise Refusal(503, "unavailable")
        origin = header(headers, b"origin")
        if origin is None:
            if self._config.require_origin:
                self.warn("ws.origin_rejected", ip, origin=None)
                raise Refusal(403, "origin_rejected")
        elif not origin_allowed(origin, self._config.allowed_origins):
            self.warn("ws.origin_rejected", ip, origin=origin[:256])
            raise Refusal(403, "origin_rejected")
        token, source = token_from(headers, query)
        if token is None:
            return None
        return await self.authenticate(token, ip, source)

    async def authenticate(self, token: str, ip: str, source: str) -> AccessClaims:
        """Claims of *token*, or Refusal: 401 (logged without the token), or 429
        when the user is over its own handshake rate (all its devices together)."""
        try:
            if len(token) > MAX_TOKEN_CHARS:
                raise InvalidToken("invalid")
            claims = await self._auth.authenticate(token)
        except InvalidToken as exc:
            self.warn("ws.auth_failed", ip, reason=exc.reason, source=source)
            raise Refusal(401, "unauthorized") from None
        wait = await self._limits.take(names.HANDSHAKE_USER, claims.user_id)
        if wait is not None:
            self.warn("ratelimit.handshake_user", claims.user_id, retry_after=round(wait, 3))
            retry = retry_after_header(wait).encode()
            raise Refusal(429, "rate_limited", ((b"Retry-After", retry),))
        return claims
