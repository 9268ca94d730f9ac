"""Every limit relay enforces, named and built from the config in one place.

Callers refer to a limit by its name (:mod:`relay.limits.names`) and pass
a key; which bucket or failure window that means, and its numbers, is
decided here and nowhere else. An adapter of the Limits port is built from
one :class:`Policies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Config
from ._port import LockoutPolicy, PlacePolicy, RatePolicy
from .names import (
    CONNECTIONS_USER,
    GUARDED_LOGIN,
    HANDSHAKE,
    HANDSHAKE_USER,
    KEYS_FETCH,
    KEYS_FETCH_USER,
    KEYS_TARGET,
    LOGIN,
    LOGIN_FAILURES,
    LOGIN_FAILURES_USER,
    REGISTER,
    SEND,
    SEND_USER,
)

GUARDED_POLICY = RatePolicy(rate=1 / 60, burst=3)
"""While guarded: 3 attempts at once, then 1 a minute, per known source."""


@dataclass(frozen=True, slots=True)
class Policies:
    """Every bucket, failure window and set of places, by name."""

    rates: Mapping[str, RatePolicy] = field(default_factory=dict)
    lockouts: Mapping[str, LockoutPolicy] = field(default_factory=dict)
    places: Mapping[str, PlacePolicy] = field(default_factory=dict)


def policies(config: Config) -> Policies:
    """The relay's limits from *config* (see relay.toml.example for each key)."""
    ws, auth, keys = config.ws, config.auth, config.keys
    return Policies(
        rates={
            LOGIN: RatePolicy.per_minute(auth.login_rate_per_minute),
            REGISTER: RatePolicy.per_hour(auth.registration_rate_per_hour),
            # The burst never exceeds the per-minute limit: an operator who
            # allows N a minute must never see more than N admitted at once.
            HANDSHAKE: RatePolicy.per_minute(
                ws.handshake_rate_per_minute,
                burst=min(ws.handshake_burst, ws.handshake_rate_per_minute),
            ),
            HANDSHAKE_USER: RatePolicy.per_minute(ws.handshake_rate_per_user_per_minute),
            SEND: RatePolicy(ws.send_rate_per_second, ws.send_burst),
            SEND_USER: RatePolicy(ws.send_rate_per_user_per_second, ws.send_burst_per_user),
            KEYS_FETCH: RatePolicy.per_minute(keys.fetch_rate_per_minute),
            KEYS_FETCH_USER: RatePolicy.per_minute(keys.fetch_rate_per_user_per_minute),
            KEYS_TARGET: RatePolicy.per_minute(keys.target_fetch_rate_per_minute),
            GUARDED_LOGIN: GUARDED_POLICY,
        },
        lockouts={
            LOGIN_FAILURES: LockoutPolicy(
                auth.lockout_threshold, auth.lockout_window, auth.lockout_duration
            ),
            LOGIN_FAILURES_USER: LockoutPolicy(
                auth.lockout_user_threshold, auth.lockout_window, auth.lockout_duration
            ),
        },
        places={CONNECTIONS_USER: PlacePolicy(ws.max_connections_per_user)},
    )
