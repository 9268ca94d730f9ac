"""The account's lifecycle: passwords, logging out everywhere, deletion.

For the account's owner (over HTTP, with a token and the current password)
and for the operator (``relay user ...``, against the store). Every change
that ends sessions revokes them through the :class:`Revoker`, so their
tokens stop working and their sockets close with 4003 on every process
that shares the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import AuthConfig
from ..crypto import AccessClaims, PasswordHasher
from ..errors import NotAuthenticated, NotFound, TooMany
from ..obs import Logger
from ..store import Store, User, UserSummary
from ._login_guard import LoginGuard
from ._revoker import Revoker
from ._service import check_password_length


class AccountService:
    """Changes to whole accounts; see the module doc."""

    def __init__(
        self,
        config: AuthConfig,
        store: Store,
        hasher: PasswordHasher,
        guard: LoginGuard,
        revoker: Revoker,
        log: Logger,
        wall_clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._hasher = hasher
        self._guard = guard
        self._revoker = revoker
        self._log = log
        self._clock = wall_clock

    # -- the owner ------------------------------------------------------
    async def change_password(self, caller: AccessClaims, old: str, new: str, ip: str) -> None:
        """Set *new* if *old* is right; every other session of the account ends.

        A wrong *old* counts as a failed login (the same lockouts apply), so
        a stolen token cannot be used to guess the password.
        """
        check_password_length(new)
        user = await self._confirm(caller, old, ip)
        await self._store.set_password(user.id, await self._hasher.hash(new))
        others = await self._store.revoke_user_sessions(
            user.id, self._clock(), keep=caller.session_id
        )
        await self._revoker.revoke(others, "password_changed")
        self._log.warning("auth.password_changed", user_id=user.id, sessions_ended=len(others))

    async def logout_all(self, caller: AccessClaims) -> None:
        """End every session of the account, the caller's too."""
        ended = await self._store.revoke_user_sessions(caller.user_id, self._clock())
        await self._revoker.revoke(ended, "logout_all")
        self._log.info("auth.logout_all", user_id=caller.user_id, sessions_ended=len(ended))

    async def delete_account(self, caller: AccessClaims, password: str, ip: str) -> None:
        """Delete the account if *password* is right (see :meth:`Store.delete_user`)."""
        user = await self._confirm(caller, password, ip)
        await self._delete(user, "account_deleted")

    async def _confirm(self, caller: AccessClaims, password: str, ip: str) -> User:
        user = await self._store.get_user(caller.user_id)
        if user is None:
            raise NotAuthenticated("invalid_token", "the account no longer exists")
        verdict = await self._guard.check(user.username, ip, known_device=True)
        if verdict is not None:
            raise TooMany(
                "locked_out", "too many failed logins; try later", retry_after=verdict.retry_after
            )
        if not await self._hasher.verify(user.password_hash, password):
            await self._guard.failed(user.username, ip)
            self._log.warning("auth.login_failed", username=user.username, ip=ip, during="confirm")
            raise NotAuthenticated("invalid_credentials", "wrong password")
        return user

    async def _delete(self, user: User, reason: str) -> list[str]:
        now = self._clock()
        ended = await self._store.delete_user(user.id, now, now + self._config.username_quarantine)
        await self._revoker.revoke(ended or [], reason)
        self._log.warning(
            "auth.account_deleted", user_id=user.id, username=user.username, reason=reason
        )
        return ended or []

    # -- the operator ---------------------------------------------------
    async def list_users(self) -> list[UserSummary]:
        return await self._store.list_users()

    async def reset_password(self, username: str, new: str) -> list[str]:
        """Set *username*'s password; every session ends. Returns their ids."""
        check_password_length(new)
        user = await self._named(username)
        await self._store.set_password(user.id, await self._hasher.hash(new))
        ended = await self._store.revoke_user_sessions(user.id, self._clock())
        await self._revoker.revoke(ended, "password_reset")
        self._log.warning("auth.password_reset", user_id=user.id, sessions_ended=len(ended))
        return ended

    async def remove(self, username: str) -> list[str]:
        """Delete *username*'s account (as the owner could). Returns the ended sessions."""
        return await self._delete(await self._named(username), "account_removed")

    async def unlock(self, username: str) -> int:
        """Lift every login lock on *username* (known or not); how many there were."""
        lifted = await self._guard.unlock(username.lower())
        self._log.warning("auth.unlocked", username=username.lower(), locks=lifted)
        return lifted

    async def _named(self, username: str) -> User:
        user = await self._store.get_user_by_name(username.lower())
        if user is None:
            raise NotFound("user_not_found", f"no user named {username.lower()!r}")
        return user
