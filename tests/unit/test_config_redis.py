"""[bus] and [limits] on Redis: the keys, their variables, and what is refused."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, load_config

URL = "redis://:hunter2-password@10.0.0.5:6379/0"


def test_redis_backends_are_chosen_from_the_environment() -> None:
    """RELAY_BUS_BACKEND / _URL / _PREFIX / _PRESENCE_TTL and RELAY_LIMITS_* set both sections."""
    config = load_config(
        env={
            "RELAY_BUS_BACKEND": "redis",
            "RELAY_BUS_URL": URL,
            "RELAY_BUS_PREFIX": "chat:",
            "RELAY_BUS_PRESENCE_TTL": "1m",
            "RELAY_LIMITS_BACKEND": "redis",
            "RELAY_LIMITS_URL": URL,
        }
    )
    assert (config.bus.backend, config.bus.url, config.bus.prefix) == ("redis", URL, "chat:")
    assert config.bus.presence_ttl == 60.0
    assert (config.limits.backend, config.limits.url, config.limits.prefix) == (
        "redis",
        URL,
        "relay:",
    )


@pytest.mark.parametrize("section", ["bus", "limits"])
def test_a_redis_backend_without_a_url_is_refused(section: str) -> None:
    """backend = "redis" with no url stops the start, naming the key and its variable."""
    with pytest.raises(ConfigError, match=rf"^{section}\.url \(RELAY_{section.upper()}_URL\)"):
        load_config(env={f"RELAY_{section.upper()}_BACKEND": "redis"})


def test_a_url_that_is_not_redis_is_refused_without_showing_it() -> None:
    """A wrong scheme is named as such; the URL (it may hold a password) is not echoed."""
    with pytest.raises(ConfigError, match=r"^limits\.url") as caught:
        load_config(
            env={"RELAY_LIMITS_BACKEND": "redis", "RELAY_LIMITS_URL": "http://:hunter2@x/"}
        )
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://:hunter2@10.0.0.5:6379/zero", "redis://:hunter2@10.0.0.5:6379/0?ssl_cert_reqs=none"],
    ids=["database not a number", "tls option without rediss"],
)
def test_a_redis_url_the_client_cannot_use_stops_the_start(url: str) -> None:
    """Parsed at start as the client will parse it; the password is never echoed."""
    with pytest.raises(ConfigError, match=r"^bus\.url \(RELAY_BUS_URL\): ") as caught:
        load_config(env={"RELAY_BUS_BACKEND": "redis", "RELAY_BUS_URL": url})
    assert "hunter2" not in str(caught.value)


def test_an_unknown_backend_is_refused() -> None:
    """Only "local"/"redis" for the bus and "memory"/"redis" for the limits."""
    with pytest.raises(ConfigError, match=r"^bus\.backend"):
        load_config(env={"RELAY_BUS_BACKEND": "memory"})
    with pytest.raises(ConfigError, match=r"^limits\.backend"):
        load_config(env={"RELAY_LIMITS_BACKEND": "local"})


def test_redis_urls_never_show_in_a_repr() -> None:
    """The URLs are secrets: the config's repr says [redacted]."""
    config = load_config(
        env={
            "RELAY_BUS_BACKEND": "redis",
            "RELAY_BUS_URL": URL,
            "RELAY_LIMITS_BACKEND": "redis",
            "RELAY_LIMITS_URL": URL,
        }
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(config.bus) + repr(config.limits)
