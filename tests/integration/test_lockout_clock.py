"""Lockouts and login-rate windows on virtual time, through the AuthService.

The policy (relay/auth/_login_guard.py): failures lock a (username, IP) pair;
a distributed guess past the per-username ceiling guards the username, which
then admits only known sources, slowed.
"""

from __future__ import annotations

import pytest
import trio

from relay.errors import Refused
from relay.services import Services
from tests.conftest import PASSWORD


async def failures(services: Services, name: str, count: int, ip: str = "10.0.0.1") -> None:
    for _ in range(count):
        with pytest.raises(Refused):
            await services.auth.login(name, "wrong-password", ip=ip)


async def refusal(services: Services, name: str, password: str, ip: str, **extra: str) -> Refused:
    with pytest.raises(Refused) as caught:
        await services.auth.login(name, password, ip=ip, **extra)
    return caught.value


async def test_lockout_ends_after_its_duration(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """Locked after 5 failures from one IP; still at 899 s; the right password works at 900 s."""
    await services.auth.register("alice", PASSWORD)
    await failures(services, "alice", 5)
    start = trio.current_time()
    await trio.sleep(899)
    locked = await refusal(services, "alice", PASSWORD, "10.0.0.1")
    assert locked.code == "locked_out"
    assert locked.retry_after == pytest.approx(900 - (trio.current_time() - start))
    await trio.sleep_until(start + 900)
    grant = await services.auth.login("alice", PASSWORD, ip="10.0.0.1")
    assert grant.user_id


async def test_failures_older_than_the_window_do_not_count(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """4 failures, 15 minutes pass, 4 more: never 5 within the window, no lockout."""
    await services.auth.register("alice", PASSWORD)
    await failures(services, "alice", 4)
    await trio.sleep(900)
    await failures(services, "alice", 4)
    assert (await services.auth.login("alice", PASSWORD, ip="10.0.0.1")).user_id


async def attempt(services: Services, n: int) -> str:
    """A failed login from one IP (a fresh username each time: no lockout); its code."""
    with pytest.raises(Refused) as caught:
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


async def test_failures_from_one_ip_never_lock_the_owner_out_elsewhere(services: Services) -> None:
    """Anyone can lock only his own (username, IP) pair: the owner's IP is unaffected."""
    await services.auth.register("alice", PASSWORD)
    await failures(services, "alice", 20, ip="203.0.113.66")
    assert (await refusal(services, "alice", PASSWORD, "203.0.113.66")).code == "locked_out"
    assert (await services.auth.login("alice", PASSWORD, ip="10.0.0.2")).user_id


async def guess_from_many_ips(services: Services, name: str, count: int) -> None:
    for i in range(count):
        await failures(services, name, 1, ip=f"198.51.100.{i}")


async def test_a_distributed_guess_guards_the_username_against_unknown_sources(
    services: Services,
) -> None:
    """Past 50 failures from anywhere, even the right password from a new IP is refused."""
    await services.auth.register("alice", PASSWORD)
    await guess_from_many_ips(services, "alice", 50)
    refused = await refusal(services, "alice", PASSWORD, "192.0.2.1")
    assert refused.code == "locked_out" and refused.retry_after == pytest.approx(900, abs=1)


async def test_the_owner_logs_in_from_a_known_ip_while_guarded(services: Services) -> None:
    """An IP the user logged in from before still works during a distributed guess."""
    await services.auth.register("alice", PASSWORD)
    await services.auth.login("alice", PASSWORD, ip="10.0.0.2")
    await guess_from_many_ips(services, "alice", 50)
    assert (await services.auth.login("alice", PASSWORD, ip="10.0.0.2")).user_id


async def test_the_owner_logs_in_from_a_known_device_while_guarded(services: Services) -> None:
    """Naming one of the account's devices is a known source, whatever the IP."""
    await services.auth.register("alice", PASSWORD)
    first = await services.auth.login("alice", PASSWORD, ip="10.0.0.2")
    await guess_from_many_ips(services, "alice", 50)
    grant = await services.auth.login(
        "alice", PASSWORD, ip="192.0.2.7", device_id=first.device_id
    )
    assert grant.device_id == first.device_id


async def test_a_known_source_is_slowed_not_stopped_while_guarded(
    services: Services, virtual_clock: trio.abc.Clock
) -> None:
    """While guarded, a known source gets 3 attempts, then one a minute."""
    await services.auth.register("alice", PASSWORD)
    await services.auth.login("alice", PASSWORD, ip="10.0.0.2")
    await guess_from_many_ips(services, "alice", 50)
    codes = [(await refusal(services, "alice", "typo-password", "10.0.0.2")).code for _ in range(4)]
    assert codes == ["invalid_credentials"] * 3 + ["locked_out"]
    slowed = await refusal(services, "alice", PASSWORD, "10.0.0.2")
    assert slowed.retry_after is not None and 0 < slowed.retry_after <= 60
    await trio.sleep(slowed.retry_after)
    assert (await services.auth.login("alice", PASSWORD, ip="10.0.0.2")).user_id


async def test_a_name_that_cannot_exist_is_refused_without_counting(services: Services) -> None:
    """A 4 KB 'username' is always 401, never locked: no lockout state is kept for it."""
    for _ in range(20):
        code = (await refusal(services, "x" * 4096, "wrong-password", "10.0.0.1")).code
        assert code == "invalid_credentials"
