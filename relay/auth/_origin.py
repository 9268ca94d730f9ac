"""Origin allowlist shared by the WebSocket gate and HTTP CORS."""

from __future__ import annotations

from urllib.parse import urlsplit

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Is *origin* (an ``Origin`` header value) on the allowlist?

    An empty *allowed* means the default: ``http(s)://localhost``,
    ``http(s)://127.0.0.1`` and ``http(s)://[::1]`` on any port. Configured
    entries match exactly (scheme and host compared case-insensitively).
    ``null`` and anything that is not ``scheme://host[:port]`` never match.
    """
    normal = _normalise(origin)
    if normal is None:
        return False
    if not allowed:
        scheme, _, rest = normal.partition("://")
        host = rest.rsplit(":", 1)[0] if not rest.endswith("]") else rest
        return scheme in ("http", "https") and host in _LOCAL_HOSTS
    return any(normal == _normalise(entry) for entry in allowed)


def _normalise(origin: str) -> str | None:
    if len(origin) > 256:
        return None
    try:
        parts = urlsplit(origin.strip())
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")
