"""Lockout and login-rate windows on virtual time, through the AuthService."""

from __future__ import annotations

import pytest
import trio

from relay.auth import AuthError
from relay.services import Services
from tests.conftest import PASSWORD


async def failures(services: Services, name: str, count: int) -> None:
    for _ in range(count):
        with pytest.raises(AuthError):
            await services.auth.login(name, "wrong-password", ip="10.0.0.1")


async def test_lockout_ends_after_its_duration(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """Locked after 5 failures; still locked at 899 s; the right password works at 900 s."""
    await services.auth.register("alice", PASSWORD)
    await failures(services, "alice", 5)
    start = trio.current_time()
    await trio.sleep(899)
    with pytest.raises(AuthError) as caught:
        await services.auth.login("alice", PASSWORD, ip="10.0.0.2")
    assert caught.value.code == "locked_out"
    assert caught.value.retry_after == pytest.approx(900 - (trio.current_time() - start))
    await trio.sleep_until(start + 900)
    grant = await services.auth.login("alice", PASSWORD, ip="10.0.0.2")
    assert grant.user_id


async def test_failures_older_than_the_window_do_not_count(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """4 failures, 15 minutes pass, 4 more: never 5 within the window, no lockout."""
    await services.auth.register("alice", PASSWORD)
    await failures(services, "alice", 4)
    await trio.sleep(900)
    await failures(services, "alice", 4)
    assert (await services.auth.login("alice", PASSWORD, ip="10.0.0.2")).user_id


async def attempt(services: Services, n: int) -> str:
    """A failed login from one IP (a fresh username each time: no lockout); its code."""
    with pytest.raises(AuthError) as caught:
        await services.auth.login(f"user{n}", "wrong-password", ip="10.0.0.9")
    return caught.value.code


async def test_login_bucket_refills_at_the_configured_rate(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """60 per minute: after the burst of 60, exactly one more per second."""
    assert {await attempt(services, n) for n in range(60)} == {"invalid_credentials"}
    assert await attempt(services, 60) == "rate_limited"
    await trio.sleep(1)
    assert await attempt(services, 61) == "invalid_credentials"
    assert await attempt(services, 62) == "rate_limited"
