"""Where the hot path's connections go: the same URLs as [bus] url and [limits] url."""

from __future__ import annotations

import ssl

import pytest

from relay.resp import RedisAddress


def test_a_redis_url_gives_host_port_database_and_password() -> None:
    address = RedisAddress.parse("redis://:s3cret@cache.example:6380/2")
    assert (address.host, address.port, address.db) == ("cache.example", 6380, 2)
    assert not address.tls
    assert address.password == "s3cret"
    assert address.handshake() == [["AUTH", "s3cret"], ["SELECT", 2]]


def test_a_user_logs_in_with_its_name() -> None:
    address = RedisAddress.parse("redis://relay:p%40ss@127.0.0.1/0")
    assert address.handshake() == [["AUTH", "relay", "p@ss"]]


def test_defaults_are_port_6379_database_0_and_no_login() -> None:
    address = RedisAddress.parse("redis://127.0.0.1")
    assert (address.port, address.db) == (6379, 0)
    assert address.handshake() == []


def test_rediss_means_tls() -> None:
    assert RedisAddress.parse("rediss://cache.example:6380/0").tls


def test_a_unix_socket_takes_its_database_from_the_query() -> None:
    address = RedisAddress.parse("unix:///run/redis/redis.sock?db=3")
    assert (address.path, address.db) == ("/run/redis/redis.sock", 3)


def test_the_password_never_shows_in_the_address_repr() -> None:
    assert "s3cret" not in repr(RedisAddress.parse("redis://:s3cret@127.0.0.1/0"))


@pytest.mark.parametrize("url", ["http://127.0.0.1", "redis://127.0.0.1/zero"])
def test_a_url_that_is_not_redis_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        RedisAddress.parse(url)


def test_an_empty_password_sends_no_login() -> None:
    assert RedisAddress.parse("redis://:@127.0.0.1/0").handshake() == []


def test_a_unix_socket_path_is_url_decoded() -> None:
    assert RedisAddress.parse("unix:///run/my%20redis.sock").path == "/run/my redis.sock"


def test_tls_checks_the_certificate_and_host_by_default() -> None:
    context = RedisAddress.parse("rediss://cache.example:6380/0").ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_tls_takes_coredis_s_options_from_the_query() -> None:
    """The same URL serves coredis and relay.resp: both must read its TLS options alike."""
    address = RedisAddress.parse("rediss://cache.example:6380/0?ssl_cert_reqs=none")
    context = address.ssl_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1/0?ssl_cert_reqs=none",
        "rediss://127.0.0.1/0?ssl_cert_reqs=sometimes",
        "rediss://127.0.0.1/0?ssl_check_hostname=maybe",
    ],
    ids=["tls option without rediss", "unknown cert_reqs", "unknown check_hostname"],
)
def test_a_tls_option_that_cannot_apply_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        RedisAddress.parse(url)
