"""Domain refusals: a stable code, a human message, and a kind. No transport.

Services raise these; each transport maps the *kind* once (the HTTP API in
``relay/http/_errors.py``, the CLI in ``relay/cli.py``). ``code`` is what
clients branch on; ``message`` is for people and may change; neither ever
echoes a secret.
"""

from __future__ import annotations


class Refused(Exception):
    """Base of every domain refusal."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidInput(Refused):
    """The request itself is wrong (a bad username, a malformed key upload)."""


class NotAuthenticated(Refused):
    """Credentials or a token are missing, wrong, expired or revoked."""


class Forbidden(Refused):
    """Allowed to nobody, or not to this caller (registration closed)."""


class NotFound(Refused):
    """No such thing for this caller (a device, a user, keys)."""


class Conflict(Refused):
    """The request collides with the current state (a taken name, too many devices)."""


class TooMany(Refused):
    """Over a limit; ``retry_after`` says when trying again can succeed."""


class Unavailable(Refused):
    """Cannot be done now (the store is unavailable); nothing changed."""
