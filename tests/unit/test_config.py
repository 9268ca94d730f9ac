"""relay.toml + environment → Config: precedence, aliases, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import (
    Config,
    ConfigError,
    Secret,
    Synchronous,
    load_config,
    parse_duration,
    sections,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_design() -> None:
    """With no file and no environment every key has the design's default."""
    config = load_config()
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert (config.ws.host, config.ws.port) == ("127.0.0.1", 8765)
    assert config.ws.handshake_rate_per_minute == 120
    assert config.ws.max_frame_bytes == 65536
    assert config.auth.access_token_ttl == 900
    assert config.auth.login_rate_per_minute == 60
    assert (config.auth.lockout_threshold, config.auth.lockout_window) == (5, 900)
    assert config.store.backend == "sqlite" and config.store.path == "relay.db"
    assert config.queue.ttl == 2_592_000 and config.queue.max_per_device == 10_000


def test_file_values_are_read(tmp_path: Path) -> None:
    """Keys in relay.toml replace the defaults."""
    path = write(tmp_path, '[http]\nport = 9000\n[ws]\nallowed_origins = ["https://a.example"]\n')
    config = load_config(path)
    assert config.http.port == 9000
    assert config.ws.allowed_origins == ("https://a.example",)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """RELAY_SECTION_KEY beats the file."""
    path = write(tmp_path, "[http]\nport = 9000\n")
    assert load_config(path, {"RELAY_HTTP_PORT": "9100"}).http.port == 9100


def test_security_aliases_override_relay_variables() -> None:
    """JWT_SECRET, WS_ALLOWED_ORIGINS and the two rate variables are honoured as given."""
    config = load_config(
        env={
            "RELAY_AUTH_LOGIN_RATE_PER_MINUTE": "5",
            "LOGIN_RATE_LIMIT_PER_MINUTE": "7",
            "WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE": "30",
            "WS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "JWT_SECRET": "s" * 32,
        }
    )
    assert config.auth.login_rate_per_minute == 7
    assert config.ws.handshake_rate_per_minute == 30
    assert config.ws.allowed_origins == ("https://a.example", "https://b.example")
    assert config.auth.jwt_secret == "s" * 32


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("no", False), ("OFF", False)]
)
def test_booleans_from_the_environment(value: str, expected: bool) -> None:
    """Booleans accept true/false, 1/0, yes/no, on/off."""
    assert load_config(env={"RELAY_WS_REQUIRE_ORIGIN": value}).ws.require_origin is expected


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RELAY_HTTP_PORT": "eighty"}, "http.port"),
        ({"RELAY_HTTP_PORT": "70000"}, "http.port"),
        ({"RELAY_WS_MAX_FRAME_BYTES": "-1"}, "ws.max_frame_bytes"),
        ({"RELAY_WS_REQUIRE_ORIGIN": "maybe"}, "ws.require_origin"),
        ({"RELAY_STORE_BACKEND": "mysql"}, "store.backend"),
        ({"LOGIN_RATE_LIMIT_PER_MINUTE": "0"}, "auth.login_rate_per_minute"),
        ({"JWT_SECRET": "short"}, "auth.jwt_secret"),
        ({"WS_ALLOWED_ORIGINS": "*"}, "ws.allowed_origins"),
        ({"WS_ALLOWED_ORIGINS": "example.com"}, "ws.allowed_origins"),
    ],
)
def test_a_bad_value_names_its_key(env: dict[str, str], key: str) -> None:
    """A bad value raises one line that names the key."""
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message


def test_a_bad_secret_is_not_echoed() -> None:
    """The error for a short JWT_SECRET does not repeat the secret."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"JWT_SECRET": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value)


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    """A typo in relay.toml stops the start instead of being ignored."""
    with pytest.raises(ConfigError, match=r"http\.prot"):
        load_config(write(tmp_path, "[http]\nprot = 1\n"))


def test_wrong_type_in_the_file_is_refused(tmp_path: Path) -> None:
    """A string where a number belongs names the key and the file."""
    with pytest.raises(ConfigError, match=r"^ws\.port \(from .*relay\.toml\)"):
        load_config(write(tmp_path, '[ws]\nport = "x"\n'))


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    """A file that is not TOML is reported as such."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[http\n"))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """--config naming a file that does not exist stops the start."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_example_file_lists_every_key_with_its_default(tmp_path: Path) -> None:
    """relay.toml.example, uncommented, names every key and gives exactly the defaults."""
    example = Path(__file__).parents[2] / "relay.toml.example"
    lines = [
        line.removeprefix("# ")
        for line in example.read_text().splitlines()
        if not line.startswith("##")
    ]
    uncommented = write(tmp_path, "\n".join(lines))
    assert load_config(uncommented) == Config()
    for section, struct in sections().items():
        assert f"[{section}]" in example.read_text(), section
        for key in struct.__struct_fields__:
            assert f"# {key} = " in example.read_text(), f"{section}.{key}"


def test_replace_changes_one_key() -> None:
    """Config.replace(section__key=value) returns a copy with that key changed."""
    config = load_config().replace(ws__port=1)
    assert config.ws.port == 1 and load_config().ws.port == 8765


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900.0), ("2.5", 2.5), ("500ms", 0.5), ("10s", 10.0), ("15m", 900.0),
     ("12h", 43_200.0), ("30d", 2_592_000.0), ("1h30m", 5_400.0), (" 15 m ", 900.0)],
)
def test_durations_are_read_with_their_unit(text: str, seconds: float) -> None:
    """A duration is seconds, or a number with ms, s, m, h or d (several may follow)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "15mm", "-5s", "1h 2"])
def test_a_malformed_duration_is_refused(text: str) -> None:
    """Anything else is an error, and from the environment it names its key."""
    with pytest.raises(ValueError):
        parse_duration(text)
    if text:
        with pytest.raises(ConfigError, match=r"^auth\.access_token_ttl \(from RELAY_AUTH_"):
            load_config(env={"RELAY_AUTH_ACCESS_TOKEN_TTL": text})


def test_durations_in_the_file_and_the_environment(tmp_path: Path) -> None:
    """"15m" in relay.toml and "2h" in the environment are seconds inside."""
    path = write(tmp_path, '[auth]\naccess_token_ttl = "15m"\nlockout_window = "1h"\n')
    config = load_config(path, {"RELAY_QUEUE_TTL": "2h"})
    assert (config.auth.access_token_ttl, config.auth.lockout_window) == (900.0, 3_600.0)
    assert config.queue.ttl == 7_200.0


def test_a_zero_duration_is_refused() -> None:
    """Durations are positive: 0s would disable a timeout by accident."""
    with pytest.raises(ConfigError, match=r"^http\.idle_timeout"):
        load_config(env={"RELAY_HTTP_IDLE_TIMEOUT": "0s"})


def test_secrets_never_show_in_a_repr() -> None:
    """The JWT secret and DSNs print as [redacted]."""
    config = load_config(env={"JWT_SECRET": "x" * 40})
    assert "x" * 40 not in repr(config)
    assert repr(Secret("hunter2hunter2")) == "'[redacted]'"


def test_synchronous_is_an_enum_validated_once() -> None:
    """store.synchronous takes full or normal, as the store's own type."""
    assert load_config(env={"RELAY_STORE_SYNCHRONOUS": "normal"}).store.synchronous is (
        Synchronous.NORMAL
    )
    with pytest.raises(ConfigError, match=r"^store\.synchronous"):
        load_config(env={"RELAY_STORE_SYNCHRONOUS": "off"})


def test_each_part_is_handed_its_section() -> None:
    """Config is frozen; replace() validates what it changes."""
    config = load_config()
    with pytest.raises(AttributeError):
        config.http.port = 1  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"^http\.port"):
        config.replace(http__port=70_000)


def test_a_postgres_store_without_a_dsn_is_refused_in_one_plain_line() -> None:
    """backend = "postgres" and no DSN: the key and its variable, once, with an example."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"RELAY_STORE_BACKEND": "postgres"})
    assert str(caught.value).startswith("store.dsn (RELAY_STORE_DSN): required when")
