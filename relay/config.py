"""relay.toml + environment variables → one frozen :class:`Config`.

Precedence, lowest first: the defaults written here, the TOML file, then the
environment. Every key ``[section] key`` has the variable
``RELAY_SECTION_KEY``; the security direction's names (``JWT_SECRET``,
``WS_ALLOWED_ORIGINS``, ``LOGIN_RATE_LIMIT_PER_MINUTE``,
``WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE``) override everything else.

A bad value raises :class:`ConfigError`, whose message is one line naming the
key (and the variable it came from), so that ``relay serve`` can print it
and stop.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECONDS = 1.0
MINUTES = 60 * SECONDS
DAYS = 86400 * SECONDS

# The security direction's variable names, honoured as given.
ALIASES: Mapping[str, tuple[str, str]] = {
    "JWT_SECRET": ("auth", "jwt_secret"),
    "WS_ALLOWED_ORIGINS": ("ws", "allowed_origins"),
    "LOGIN_RATE_LIMIT_PER_MINUTE": ("auth", "login_rate_per_minute"),
    "WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE": ("ws", "handshake_rate_per_minute"),
}

MIN_JWT_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    graceful_timeout: float = 5 * SECONDS
    max_connections: int = 4096
    max_connections_per_ip: int = 256
    idle_timeout: float = 15 * SECONDS  # silence allowed mid-request or between requests
    request_timeout: float = 30 * SECONDS  # to receive a whole request body


@dataclass(frozen=True, slots=True)
class WsConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    allowed_origins: tuple[str, ...] = ()
    require_origin: bool = False
    handshake_rate_per_minute: int = 120
    handshake_burst: int = 20
    handshake_timeout: float = 10 * SECONDS
    max_pending: int = 4096  # connections not yet authenticated, in all
    max_pending_per_ip: int = 32  # ... and from one IP
    max_frame_bytes: int = 65536
    max_connections: int = 100_000
    max_connections_per_user: int = 64
    heartbeat_interval: float = 25 * SECONDS
    heartbeat_timeout: float = 10 * SECONDS
    auth_timeout: float = 5 * SECONDS
    send_rate_per_second: float = 100.0  # per device ...
    send_burst: int = 200
    send_rate_per_user_per_second: float = 200.0  # ... and per user, all devices together
    send_burst_per_user: int = 400
    handshake_rate_per_user_per_minute: int = 120
    outbound_queue: int = 256
    bad_frame_limit: int = 10
    shutdown_grace: float = 10 * SECONDS


@dataclass(frozen=True, slots=True)
class AuthConfig:
    jwt_secret: str = field(default="", repr=False)
    access_token_ttl: int = 900
    refresh_token_ttl: int = 2_592_000
    session_max_age: int = 7_776_000  # 90 days: refresh never extends a session past this
    open_registration: bool = True
    registration_rate_per_hour: int = 20  # per IP
    login_rate_per_minute: int = 60
    lockout_threshold: int = 5  # failures per (username, IP) ...
    lockout_user_threshold: int = 50  # ... and per username from anywhere (then guarded)
    lockout_window: float = 15 * MINUTES
    lockout_duration: float = 15 * MINUTES
    max_devices_per_user: int = 32
    hash_concurrency: int = 2
    argon2_opslimit: int = 2
    argon2_memlimit: int = 67_108_864


@dataclass(frozen=True, slots=True)
class KeysConfig:
    max_prekeys_per_upload: int = 100
    low_water: int = 10
    fetch_rate_per_minute: int = 60
    target_fetch_rate_per_minute: int = 30


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: str = "sqlite"
    path: str = "relay.db"
    dsn: str = field(default="", repr=False)
    batch_max: int = 256
    synchronous: str = "full"
    busy_timeout: float = 5 * SECONDS  # SQLite: wait this long for another process's lock


@dataclass(frozen=True, slots=True)
class BusConfig:
    backend: str = "local"
    url: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    ttl: int = 2_592_000
    max_per_device: int = 10_000
    max_per_sender: int = 1_000  # of each device's queue, per sending user


@dataclass(frozen=True, slots=True)
class ServerConfig:
    max_open_sockets: int = 0  # 0: the open-file limit less a reserve


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything relay reads at start, frozen; passed down explicitly."""

    http: HttpConfig = field(default_factory=HttpConfig)
    ws: WsConfig = field(default_factory=WsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or ``section__key=value`` pairs changed."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            if "__" in name:
                section, key = name.split("__", 1)
                base = changes.get(section, getattr(self, section))
                changes[section] = dataclasses.replace(base, **{key: value})
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


_CHOICES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("store", "backend"): ("sqlite",),
    ("store", "synchronous"): ("full", "normal"),
    ("bus", "backend"): ("local",),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("json", "console"),
}

# Keys that may be zero (everything else numeric must be positive).
_MAY_BE_ZERO = {("http", "port"), ("ws", "port"), ("server", "max_open_sockets")}


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read *path* (if given) and *env*, validate, and return the Config.

    Raises :class:`ConfigError` for an unreadable file, an unknown key or a
    bad value. The JWT secret's presence is checked by the caller (``relay
    serve --dev`` may do without one).
    """
    raw: dict[str, dict[str, tuple[Any, str]]] = {}
    if path is not None:
        _merge_file(raw, Path(path))
    _merge_env(raw, env or {})
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        cls = _section_class(f.name)
        values = {
            key: _coerce(f.name, key, value, origin, cls)
            for key, (value, origin) in raw.get(f.name, {}).items()
        }
        sections[f.name] = cls(**values)
    config = Config(**sections)
    _validate(config)
    return config


def _section_class(name: str) -> type[Any]:
    return type(getattr(Config(), name))


def _keys(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(_section_class(section))}


def _merge_file(raw: dict[str, dict[str, tuple[Any, str]]], path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    sections = {f.name for f in dataclasses.fields(Config)}
    for section, table in data.items():
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        known = _keys(section)
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{section}.{key}: unknown key in {path}")
            raw.setdefault(section, {})[key] = (value, f"{path}")


def _merge_env(raw: dict[str, dict[str, tuple[Any, str]]], env: Mapping[str, str]) -> None:
    for f in dataclasses.fields(Config):
        for key in _keys(f.name):
            var = f"RELAY_{f.name}_{key}".upper()
            if var in env:
                raw.setdefault(f.name, {})[key] = (env[var], var)
    for var, (section, key) in ALIASES.items():
        if var in env:
            raw.setdefault(section, {})[key] = (env[var], var)


def _coerce(section: str, key: str, value: Any, origin: str, cls: type[Any]) -> Any:
    default = getattr(cls(), key)
    where = f"{section}.{key} (from {origin})"
    from_env = isinstance(value, str) and not isinstance(default, str)
    try:
        if isinstance(default, bool):
            return _to_bool(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value.strip() if from_env else value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        kind = type(default).__name__.replace("tuple", "list of strings")
        raise ConfigError(f"{where}: expected {kind}, got {_show(key, value)}") from None
    raise ConfigError(f"{where}: unsupported value")  # pragma: no cover


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError


def _show(key: str, value: Any) -> str:
    if key in ("jwt_secret", "dsn", "url"):
        return "<redacted>"
    return repr(value)


def _validate(config: Config) -> None:
    for f in dataclasses.fields(Config):
        section = getattr(config, f.name)
        for key in _keys(f.name):
            value = getattr(section, key)
            choices = _CHOICES.get((f.name, key))
            if choices is not None and value not in choices:
                raise ConfigError(
                    f"{f.name}.{key}: must be one of {', '.join(choices)} (got {value!r})"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            floor = 0 if (f.name, key) in _MAY_BE_ZERO else 1e-9
            if value < floor:
                raise ConfigError(f"{f.name}.{key}: must be positive (got {value!r})")
            if key == "port" and value > 65535:
                raise ConfigError(f"{f.name}.{key}: must be a port 0-65535 (got {value!r})")
    secret = config.auth.jwt_secret
    if secret and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"auth.jwt_secret (JWT_SECRET): must be at least {MIN_JWT_SECRET_BYTES} bytes"
        )
    for origin in config.ws.allowed_origins:
        if "://" not in origin and origin != "*":
            raise ConfigError(
                f"ws.allowed_origins (WS_ALLOWED_ORIGINS): {origin!r} is not an origin "
                "like https://chat.example.com"
            )
    if "*" in config.ws.allowed_origins:
        raise ConfigError("ws.allowed_origins (WS_ALLOWED_ORIGINS): a wildcard is not allowed")
