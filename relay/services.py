"""The one :class:`Services` object both servers share, built once at start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .auth import AccountService, AuthService
from .bus import Bus
from .config import Config
from .crypto import PasswordHasher, TokenService
from .keys import KeyService
from .limits import Limits
from .net import ConnectionSlots
from .obs import Logger, Metrics
from .store import Store


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request or a connection needs, passed explicitly."""

    config: Config
    store: Store
    limits: Limits
    hasher: PasswordHasher
    tokens: TokenService
    auth: AuthService
    accounts: AccountService
    keys: KeyService
    bus: Bus
    metrics: Metrics
    log: Logger
    wall_clock: Callable[[], float]  # Unix time: token and session expiry, stored times
    clock: Callable[[], float]  # monotonic (Trio's): rates, timeouts, heartbeats
    sockets: ConnectionSlots  # the process's socket budget, shared by both servers
