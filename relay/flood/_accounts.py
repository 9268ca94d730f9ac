"""Throw-away accounts for the messages and idle modes: register, log in.

Each account is ``flood-<hex>`` with a random password and one device. The
relay limits logins per source IP; a 429 is waited out (its
``Retry-After``) and counted, never treated as a failure, until the setup
deadline. Logins are spread over the source addresses round-robin, so with
several 127.0.0.x sources each has its own bucket.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ._http import HttpError, HttpResponse, request
from ._target import Endpoint, pick

DEFAULT_RETRY = 1.0


@dataclass(frozen=True, slots=True)
class Account:
    """A logged-in flood device."""

    username: str
    user_id: str
    device_id: str
    token: str = field(repr=False)
    source: str | None = None


@dataclass(slots=True)
class SetupTally:
    """What account setup ran into."""

    wanted: int = 0
    registered: int = 0
    logged_in: int = 0
    login_rate_limited: int = 0
    """429 answers to a login (each waited out, then retried)."""
    waited_s: float = 0.0
    """Total seconds spent waiting on Retry-After (summed over tasks)."""
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "wanted": self.wanted,
            "registered": self.registered,
            "logged_in": self.logged_in,
            "login_rate_limited": self.login_rate_limited,
            "waited_s": round(self.waited_s, 3),
            "seconds": round(self.seconds, 3),
            "failures": dict(self.failures),
        }


class _Failed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _kind(step: str, response: HttpResponse) -> str:
    return f"{step}:{response.status}:{response.error_code() or '-'}"


async def _register(http: Endpoint, source: str | None, tally: SetupTally) -> tuple[str, str]:
    for _ in range(3):
        username = f"flood-{secrets.token_hex(6)}"
        password = secrets.token_urlsafe(18)
        response = await request(
            http,
            "POST",
            "/api/accounts",
            json_body={"username": username, "password": password},
            local_address=source,
        )
        if response.status == 201:
            tally.registered += 1
            return username, password
        if response.status != 409:
            raise _Failed(_kind("register", response))
    raise _Failed("register:409:username_taken")


async def _login(
    http: Endpoint, username: str, password: str, source: str | None, tally: SetupTally
) -> Account:
    body = {"username": username, "password": password, "device_name": "relay-flood"}
    while True:
        response = await request(http, "POST", "/api/login", json_body=body, local_address=source)
        if response.status == 200:
            grant = response.json()
            tally.logged_in += 1
            return Account(
                username, grant["user_id"], grant["device_id"], grant["access_token"], source
            )
        if response.status != 429:
            raise _Failed(_kind("login", response))
        tally.login_rate_limited += 1
        wait = response.retry_after() or DEFAULT_RETRY
        tally.waited_s += wait
        await trio.sleep(wait)


async def open_accounts(
    http: Endpoint,
    count: int,
    *,
    sources: Sequence[str] = (),
    tally: SetupTally,
    timeout: float,
    concurrency: int = 4,
) -> list[Account]:
    """Register and log in up to *count* accounts within *timeout* seconds.

    Returns the accounts that made it, in creation order (fewer than
    *count* if some failed or the time ran out; *tally* says why). Never
    raises for a refusal.
    """
    tally.wanted += count
    limiter = trio.CapacityLimiter(concurrency)
    made: list[tuple[int, Account]] = []
    failed = 0
    started = trio.current_time()

    async def one(i: int) -> None:
        nonlocal failed
        source = pick(sources, i)
        async with limiter:
            try:
                username, password = await _register(http, source, tally)
                made.append((i, await _login(http, username, password, source, tally)))
                return
            except _Failed as exc:
                tally.failures[exc.kind] += 1
            except HttpError:
                tally.failures["http_error"] += 1
            except (KeyError, TypeError):
                tally.failures["bad_login_response"] += 1
            failed += 1

    with trio.move_on_after(timeout) as scope:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
    if scope.cancelled_caught:
        tally.failures["setup_timeout"] += count - len(made) - failed
    tally.seconds += trio.current_time() - started
    return [account for _, account in sorted(made, key=lambda item: item[0])]
