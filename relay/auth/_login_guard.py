"""Failed-login lockouts that an attacker cannot turn against the account owner.

The policy (docs/security.md, "Brute force"):

- Failures are counted per **(username, IP)**: ``auth.lockout_threshold`` (5)
  within ``auth.lockout_window`` (15 min) lock that pair for
  ``auth.lockout_duration`` (15 min). Someone guessing from elsewhere locks
  only himself out; the owner at home is not affected.
- Failures are also counted per **username**, from anywhere: past
  ``auth.lockout_user_threshold`` (50) within the window — a distributed
  guess — the username is *guarded* for ``auth.lockout_duration``. While
  guarded, logins from an unknown source are refused (429 ``locked_out``);
  from a **known source** — an IP the user logged in from within 30 days,
  or a device of the account named in ``device_id`` — they are slowed (3
  attempts, then one a minute per source), not stopped.
- Both apply to usernames that do not exist, so a lockout reveals nothing;
  a name that cannot be a username (wrong length or characters) is refused
  without counting anything, so it can cost no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..limits import Limits, names

KNOWN_SOURCE_TTL = 30 * 86_400.0
"""How long an IP stays known after a successful login from it."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a login may not be tried now, and for how long (seconds)."""

    reason: str  # "locked_out" (pair lock), "guarded" (unknown source), "slowed"
    retry_after: float


class LoginGuard:
    """Applies the policy above through the Limits port; knows nothing of HTTP."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    async def check(self, name: str, ip: str, known_device: bool) -> Verdict | None:
        """None if a login of *name* from *ip* may be tried now; else why not.

        *known_device* says whether the request named a device of this account.
        """
        pair = _pair(name, ip)
        locked = await self._limits.locked_for(names.LOGIN_FAILURES, pair)
        if locked is not None:
            return Verdict("locked_out", locked)
        guarded = await self._limits.locked_for(names.LOGIN_FAILURES_USER, name)
        if guarded is None:
            return None
        if await self._limits.knows(_known_key(name), ip):
            source = pair
        elif known_device:
            source = f"{name}|device"
        else:
            return Verdict("guarded", guarded)
        wait = await self._limits.take(names.GUARDED_LOGIN, source)
        return None if wait is None else Verdict("slowed", wait)

    async def failed(self, name: str, ip: str) -> tuple[float | None, float | None]:
        """Count a failure; the (pair lock, username guard) it started, if any."""
        pair_lock = await self._limits.record_failure(names.LOGIN_FAILURES, _pair(name, ip))
        guard = await self._limits.record_failure(names.LOGIN_FAILURES_USER, name)
        return pair_lock, guard

    async def unlock(self, name: str) -> int:
        """Lift every lock on *name*: its guard and its pairs (an operator's call)."""
        lifted = await self._limits.unlock(names.LOGIN_FAILURES_USER, name)
        return int(lifted) + await self._limits.unlock_prefix(names.LOGIN_FAILURES, f"{name}|")

    async def succeeded(self, name: str, ip: str) -> None:
        """Forget this pair's failures and remember *ip* as a known source of *name*."""
        await self._limits.clear_failures(names.LOGIN_FAILURES, _pair(name, ip))
        await self._limits.remember(_known_key(name), ip, KNOWN_SOURCE_TTL)


def _pair(name: str, ip: str) -> str:
    # A username never contains "|", so pairs cannot collide.
    return f"{name}|{ip}"


def _known_key(name: str) -> str:
    return f"known:{name}"
