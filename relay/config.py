"""relay.toml + environment variables → one frozen :class:`Config`.

Precedence, lowest first: the defaults written here, the TOML file, then the
environment. Every key ``[section] key`` has the variable
``RELAY_SECTION_KEY``; the security direction's names (``JWT_SECRET``,
``WS_ALLOWED_ORIGINS``, ``LOGIN_RATE_LIMIT_PER_MINUTE``,
``WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE``) override everything else.

The sections are msgspec structs: their types do the validation (a port is
0-65535, a rate is positive, a backend is one of its names) and the
conversion of environment strings. Durations are :data:`Seconds`: a number
of seconds, or a string with its unit — ``"900ms"``, ``"10s"``, ``"15m"``,
``"12h"``, ``"30d"`` (or several: ``"1h30m"``). Each part of relay is handed
the section it reads, never the whole Config.

A bad value raises :class:`ConfigError`, whose message is one line naming the
key (and the variable or file it came from), so that ``relay serve`` can
print it and stop.
"""

from __future__ import annotations

import contextlib
import enum
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
DAYS = 24 * HOURS

Seconds = Annotated[float, msgspec.Meta(gt=0)]
"""A duration: seconds, or a string with units (``"15m"``); always > 0."""
Delay = Annotated[float, msgspec.Meta(ge=0)]
"""A duration that may be 0 (off); written like :data:`Seconds`."""
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Count = Annotated[int, msgspec.Meta(ge=1)]
Rate = Annotated[float, msgspec.Meta(gt=0)]

# The security direction's variable names, honoured as given.
ALIASES: Mapping[str, tuple[str, str]] = {
    "JWT_SECRET": ("auth", "jwt_secret"),
    "WS_ALLOWED_ORIGINS": ("ws", "allowed_origins"),
    "LOGIN_RATE_LIMIT_PER_MINUTE": ("auth", "login_rate_per_minute"),
    "WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE": ("ws", "handshake_rate_per_minute"),
}

MIN_JWT_SECRET_BYTES = 32
_SECRET_KEYS = frozenset({"jwt_secret", "dsn", "url", "token"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line."""


class Secret(str):
    """A string that never shows itself in a repr (JWT secret, DSNs with passwords)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'[redacted]'" if self else "''"


class Synchronous(enum.Enum):
    """SQLite's durability per commit (``store.synchronous``)."""

    FULL = "full"  # fsync every commit: survives a power loss
    NORMAL = "normal"  # fsync at checkpoints: survives a crash of relay, not of the machine


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A section of relay.toml (subclasses repeat the options for type checkers)."""


class HttpConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    max_body_bytes: Count = 65536
    graceful_timeout: Seconds = 5 * SECONDS
    max_connections: Count = 4096
    max_connections_per_ip: Count = 256
    idle_timeout: Seconds = 15 * SECONDS  # silence allowed mid-request or between requests
    request_timeout: Seconds = 30 * SECONDS  # to receive a whole request body
    metrics: bool = True  # serve /metrics here (false: only on the admin port)


class WsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8765
    allowed_origins: tuple[str, ...] = ()
    require_origin: bool = False
    handshake_rate_per_minute: Count = 120
    handshake_burst: Count = 20
    handshake_timeout: Seconds = 10 * SECONDS
    max_pending: Count = 4096  # connections not yet authenticated, in all
    max_pending_per_ip: Count = 32  # ... and from one IP
    max_frame_bytes: Count = 65536
    max_connections: Count = 100_000
    max_connections_per_user: Count = 64
    heartbeat_interval: Seconds = 25 * SECONDS
    heartbeat_timeout: Seconds = 10 * SECONDS
    auth_timeout: Seconds = 5 * SECONDS
    send_rate_per_second: Rate = 100.0  # per device ...
    send_burst: Count = 200
    send_rate_per_user_per_second: Rate = 200.0  # ... and per user, all devices together
    send_burst_per_user: Count = 400
    handshake_rate_per_user_per_minute: Count = 120
    outbound_queue: Count = 256
    bad_frame_limit: Count = 10
    shutdown_grace: Seconds = 10 * SECONDS


class AuthConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    jwt_secret: Secret = Secret("")
    access_token_ttl: Seconds = 15 * MINUTES
    refresh_token_ttl: Seconds = 30 * DAYS
    session_max_age: Seconds = 90 * DAYS  # refresh never extends a session past this
    open_registration: bool = True
    registration_rate_per_hour: Count = 20  # per IP
    username_quarantine: Seconds = 90 * DAYS  # a deleted account's name stays unavailable
    login_rate_per_minute: Count = 60
    lockout_threshold: Count = 5  # failures per (username, IP) ...
    lockout_user_threshold: Count = 50  # ... and per username from anywhere (then guarded)
    lockout_window: Seconds = 15 * MINUTES
    lockout_duration: Seconds = 15 * MINUTES
    max_devices_per_user: Count = 32
    hash_concurrency: Count = 2
    argon2_opslimit: Count = 2
    argon2_memlimit: Count = 67_108_864


class KeysConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_prekeys_per_upload: Count = 100
    low_water: Count = 10
    fetch_rate_per_minute: Count = 60  # per requesting device ...
    fetch_rate_per_user_per_minute: Count = 120  # ... and per requesting user
    target_fetch_rate_per_minute: Count = 30


class StoreConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "relay.db"  # sqlite
    dsn: Secret = Secret("")  # postgres: libpq DSN or URL; the tables go in its search_path
    pool_size: Count = 10  # postgres: connections (and worker threads) per relay process
    batch_max: Count = 256
    ack_delay: Delay = 0.05  # acks wait at most this long to share a commit with sends
    synchronous: Synchronous = Synchronous.FULL
    # How long a call waits for another's lock (either engine) or, with
    # PostgreSQL, for a pooled connection, before the store is unavailable.
    busy_timeout: Seconds = 5 * SECONDS


class BusConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["local", "redis"] = "local"
    url: Secret = Secret("")  # redis: redis://[:password@]host:6379/0 (or rediss://, unix://)
    prefix: str = "relay:"  # every key and channel the bus uses starts with it
    presence_ttl: Seconds = 30 * SECONDS  # a device's route outlives a dead process this long


class LimitsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["memory", "redis"] = "memory"
    url: Secret = Secret("")  # redis: as for [bus]; may be the same server
    prefix: str = "relay:"  # every key the limits use starts with it
    place_ttl: Seconds = 30 * SECONDS  # redis: a dead process's connection places free after this


class QueueConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ttl: Seconds = 30 * DAYS
    max_per_device: Count = 10_000
    max_per_sender: Count = 1_000  # of each device's queue, per sending user


class ServerConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_open_sockets: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: the open-file limit less 256
    reuse_port: bool = False  # SO_REUSEPORT: several processes share the ports
    workers: Count = 1  # processes `relay serve` starts (> 1 needs the Redis bus and limits)


class AdminConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8081
    token: Secret = Secret("")  # required unless host is a loopback address


class LogConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything relay reads at start, frozen; each part is handed its section."""

    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    ws: WsConfig = msgspec.field(default_factory=WsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    keys: KeysConfig = msgspec.field(default_factory=KeysConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def replace(self, **changes: Any) -> Config:
        """A copy with whole sections or ``section__key=value`` pairs changed (validated)."""
        raw = msgspec.to_builtins(self, enc_hook=_encode)
        for name, value in changes.items():
            if "__" in name:
                section, key = name.split("__", 1)
                raw[section][key] = _builtin(value)
            else:
                raw[name] = msgspec.to_builtins(value, enc_hook=_encode)
        return _convert(raw, {})


def sections() -> dict[str, type[_Section]]:
    """Every section's name and struct, in file order."""
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in Config.__struct_fields__}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read *path* (if given) and *env*, validate, and return the Config.

    Raises :class:`ConfigError` for an unreadable file, an unknown key or a
    bad value. The JWT secret's presence is checked by the caller (``relay
    serve --dev`` may do without one).
    """
    raw: dict[str, dict[str, Any]] = {}
    origins: dict[tuple[str, str], str] = {}
    if path is not None:
        _merge_file(raw, origins, Path(path))
    _merge_env(raw, origins, env or {})
    return _convert(raw, origins)


# -- reading ------------------------------------------------------------------


def _merge_file(
    raw: dict[str, dict[str, Any]], origins: dict[tuple[str, str], str], path: Path
) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    known = sections()
    for section, table in data.items():
        if section not in known or not isinstance(table, dict):
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        for key, value in table.items():
            if key not in known[section].__struct_fields__:
                raise ConfigError(f"{section}.{key}: unknown key in {path}")
            raw.setdefault(section, {})[key] = value
            origins[(section, key)] = str(path)


def _merge_env(
    raw: dict[str, dict[str, Any]], origins: dict[tuple[str, str], str], env: Mapping[str, str]
) -> None:
    wanted = {
        f"RELAY_{section}_{key}".upper(): (section, key)
        for section, cls in sections().items()
        for key in cls.__struct_fields__
    }
    wanted.update(ALIASES)  # later, so the security names win
    for var, (section, key) in wanted.items():
        if var in env:
            raw.setdefault(section, {})[key] = _from_env(section, key, env[var])
            origins[(section, key)] = var


_BOOL_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}


def _from_env(section: str, key: str, value: str) -> Any:
    """An environment string in the shape its field expects (types do the rest)."""
    field = typing.get_type_hints(sections()[section], include_extras=True)[key]
    if field == tuple[str, ...]:
        return [part.strip() for part in value.split(",") if part.strip()]
    if field is bool:
        return _BOOL_WORDS.get(value.strip().lower(), value.strip())
    return value.strip() if field is not str and field is not Secret else value


# -- durations ----------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": SECONDS, "m": MINUTES, "h": HOURS, "d": DAYS}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str) -> float:
    """Seconds in ``"900"``, ``"10s"``, ``"15m"``, ``"1h30m"``...; ValueError otherwise."""
    text = value.strip().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _durations(raw: dict[str, dict[str, Any]]) -> None:
    """Turn duration strings into seconds, in place (the types check the rest)."""
    for section, cls in sections().items():
        hints = typing.get_type_hints(cls, include_extras=True)
        for key, value in raw.get(section, {}).items():
            if hints.get(key) in (Seconds, Delay) and isinstance(value, str):
                # A bad one is left as a string: the conversion names the key.
                with contextlib.suppress(ValueError):
                    raw[section][key] = parse_duration(value)


# -- converting and checking --------------------------------------------------


def _convert(raw: dict[str, dict[str, Any]], origins: dict[tuple[str, str], str]) -> Config:
    _durations(raw)
    try:
        config = msgspec.convert(raw, Config, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise _explain(exc, raw, origins) from None
    _check(config)
    return config


def _decode(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str):  # Secret
        return str(value)
    raise NotImplementedError


def _builtin(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Secret) else value


_AT = re.compile(r"^(.*?)(?: - at `\$\.(\w+)(?:\.(\w+))?`)?$")
_UNKNOWN = re.compile(r"unknown field `(\w+)`")


def _explain(
    exc: msgspec.ValidationError,
    raw: dict[str, dict[str, Any]],
    origins: dict[tuple[str, str], str],
) -> ConfigError:
    """One line naming the key, where it came from, and what was wrong."""
    match = _AT.match(str(exc))
    assert match is not None
    message, section, key = match.groups()
    unknown = _UNKNOWN.search(message)
    if unknown and section:
        return ConfigError(f"{section}.{unknown.group(1)}: unknown key")
    if section is None or key is None:
        return ConfigError(f"config: {message}")
    where = f"{section}.{key} (from {origins.get((section, key), 'the defaults')})"
    value = raw.get(section, {}).get(key)
    shown = "<redacted>" if key in _SECRET_KEYS else repr(value)
    detail = re.sub(r", got `\w+`$", "", message)
    return ConfigError(f"{where}: {detail[:1].lower()}{detail[1:]}, got {shown}")


def _check(config: Config) -> None:
    """What the types cannot say: the secret's length, origins' shape."""
    secret = config.auth.jwt_secret
    if secret and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"auth.jwt_secret (JWT_SECRET): must be at least {MIN_JWT_SECRET_BYTES} bytes"
        )
    admin = config.admin
    if admin.enabled and admin.host not in _LOOPBACK and not admin.token:
        raise ConfigError(
            "admin.token (RELAY_ADMIN_TOKEN): required when admin.host is not a loopback "
            f"address (got {admin.host!r})"
        )
    if admin.token and len(admin.token.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(f"admin.token: must be at least {MIN_JWT_SECRET_BYTES} bytes")
    if config.store.backend == "postgres" and not config.store.dsn:
        raise ConfigError(
            'store.dsn (RELAY_STORE_DSN): required when store.backend is "postgres", '
            "e.g. postgresql://relay@127.0.0.1:5432/relay"
        )
    for section, url in (("bus", config.bus.url), ("limits", config.limits.url)):
        backend = getattr(config, section).backend
        if backend == "redis" and not url:
            raise ConfigError(
                f'{section}.url (RELAY_{section.upper()}_URL): required when {section}.backend '
                'is "redis", e.g. redis://127.0.0.1:6379/0'
            )
        if url and not url.startswith(_REDIS_SCHEMES):
            # The URL may carry a password: name the key, never the value.
            raise ConfigError(
                f"{section}.url (RELAY_{section.upper()}_URL): must start with "
                f"{', '.join(_REDIS_SCHEMES)}"
            )
        if url:
            _check_redis_url(f"{section}.url (RELAY_{section.upper()}_URL)", url)
    for origin in config.ws.allowed_origins:
        if origin == "*":
            raise ConfigError("ws.allowed_origins (WS_ALLOWED_ORIGINS): a wildcard is not allowed")
        if "://" not in origin:
            raise ConfigError(
                f"ws.allowed_origins (WS_ALLOWED_ORIGINS): {origin!r} is not an origin "
                "like https://chat.example.com"
            )


def _check_redis_url(key: str, url: str) -> None:
    """Parse *url* as relay's Redis client will: a bad one stops the start here."""
    from .resp import RedisAddress  # here: loading the config must not import Trio

    try:
        RedisAddress.parse(url)
    except (ValueError, OSError) as exc:  # the messages name parts, never the password
        raise ConfigError(f"{key}: {exc}") from None
