"""Request ids: keep a client's sane one, otherwise make one."""

from __future__ import annotations

import re
import secrets

_SANE = re.compile(r"[\x21-\x7e]{1,128}")


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` if ≤ 128 printable ASCII chars, else a new id."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return secrets.token_hex(16)
