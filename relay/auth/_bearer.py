"""The ``Authorization: Bearer`` header, parsed once for both servers. Pure."""

from __future__ import annotations


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None.

    The scheme is case-insensitive (RFC 7235); any other scheme, or an empty
    token, is no token at all.
    """
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
