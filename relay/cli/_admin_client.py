"""Talking to the running relay's admin endpoint (``[admin]``) from a command."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..config import Config


class AdminUnreachable(Exception):
    """No relay answered at the configured admin endpoint (or it refused us)."""


def admin_url(config: Config) -> str:
    admin = config.admin
    host = f"[{admin.host}]" if ":" in admin.host else admin.host
    return f"http://{host}:{admin.port}"


def call_admin(config: Config, path: str, body: Any | None = None) -> Any:
    """POST *body* (or GET without one) to the running relay's admin endpoint.

    Raises :class:`AdminUnreachable` with a sentence saying why: the endpoint
    is disabled in this configuration, nothing listens there, or it refused.
    """
    if not config.admin.enabled:
        raise AdminUnreachable("[admin] is not enabled in this configuration")
    url = admin_url(config) + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if config.admin.token:
        request.add_header("Authorization", f"Bearer {config.admin.token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our own URL)
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AdminUnreachable(f"the admin endpoint at {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminUnreachable(f"no relay answered at {admin_url(config)} ({reason})") from None
