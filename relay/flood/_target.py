"""Where ``relay flood`` may point: URL parsing and the loopback-only rule.

Everything here is pure (no I/O) except :func:`resolve_loopback`, which
checks what the name ``localhost`` resolves to before the first connection,
and :func:`resolve`.

The rule: a target host must be a loopback address (``127.0.0.0/8``,
``::1``, or the name ``localhost``) unless the caller allows remote targets
explicitly. Any other name or address is refused before a packet is sent.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

LOOPBACK_NAME = "localhost"
DEFAULT_PORTS = {"ws": 80, "http": 80}
PORTS_PER_SOURCE = 20_000
"""Connections per source address before another 127.0.0.x is used."""


class UnsafeTarget(ValueError):
    """The target (or a source address) is refused; ``str()`` says why, in one line."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed ``ws://`` or ``http://`` URL."""

    scheme: str
    host: str
    """Without IPv6 brackets."""
    port: int
    path: str
    """Path and query for ``ws``; the base path (no trailing slash) for ``http``."""

    @property
    def authority(self) -> str:
        """``host:port`` as the Host header wants it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"


def parse_endpoint(url: str, scheme: str) -> Endpoint:
    """Parse *url*, which must use *scheme* (``ws`` or ``http``); ValueError otherwise.

    TLS (``wss``/``https``) is not supported: flood measures the relay, and a
    relay behind a TLS terminator is measured through that terminator's
    plain-text side.
    """
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"{url!r}: expected a {scheme}:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: credentials in the URL are not supported")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if scheme == "ws":
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    else:
        path = parts.path.rstrip("/")
    return Endpoint(scheme, parts.hostname, port, path)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    """True for the name ``localhost`` and for 127.0.0.0/8, ::1 (or ::ffff:127.x)."""
    if host.lower() == LOOPBACK_NAME:
        return True
    address = _address(host)
    return address is not None and address.is_loopback


def check_target(host: str, *, allow_remote: bool) -> None:
    """Raise :class:`UnsafeTarget` unless *host* is loopback or *allow_remote*."""
    if allow_remote or is_loopback(host):
        return
    raise UnsafeTarget(
        f"refusing to flood {host!r}: not a loopback address (127.0.0.0/8, ::1, localhost); "
        "pass --allow-remote only for a deployment you operate"
    )


def parse_source_ips(text: str | None, *, allow_remote: bool) -> tuple[str, ...]:
    """Comma-separated IP literals to bind as source addresses.

    Raises ValueError for a non-literal, and :class:`UnsafeTarget` for a
    non-loopback source unless *allow_remote*.
    """
    if not text:
        return ()
    sources: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        address = _address(item)
        if address is None:
            raise ValueError(f"source address {item!r} is not an IP address")
        if not allow_remote and not address.is_loopback:
            raise UnsafeTarget(f"source address {item!r} is not a loopback address")
        sources.append(str(address))
    return tuple(sources)


def numbered_sources(count: int) -> tuple[str, ...]:
    """``127.0.0.1`` … ``127.0.0.<count>``; ValueError unless 1 ≤ *count* ≤ 254."""
    if not 1 <= count <= 254:
        raise ValueError(f"sources must be 1-254, not {count}")
    return tuple(f"127.0.0.{i}" for i in range(1, count + 1))


def auto_sources(connections: int, target_host: str) -> tuple[str, ...]:
    """Source addresses for *connections* to one IPv4 loopback target.

    One address per :data:`PORTS_PER_SOURCE` connections (127.0.0.1, .2, ...);
    empty (let the kernel choose) when one address suffices or the target is
    not IPv4 loopback.
    """
    needed = math.ceil(connections / PORTS_PER_SOURCE)
    address = _address(target_host)
    if needed <= 1 or not isinstance(address, ipaddress.IPv4Address):
        return ()
    if not address.is_loopback:
        return ()
    return tuple(f"127.0.0.{i}" for i in range(1, min(needed, 254) + 1))


def pick(sources: Sequence[str], i: int) -> str | None:
    """The source address for the *i*-th connection (round-robin), None for any."""
    return sources[i % len(sources)] if sources else None


async def resolve_loopback(host: str, port: int, *, allow_remote: bool) -> None:
    """Check that the name ``localhost`` resolves only to loopback addresses.

    A no-op for IP literals and (with *allow_remote*) for everything. Raises
    :class:`UnsafeTarget` if the resolver maps ``localhost`` elsewhere, and
    OSError if it cannot resolve it at all.
    """
    check_target(host, allow_remote=allow_remote)
    if allow_remote or _address(host) is not None:
        return
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        addr = str(info[4][0])
        if not is_loopback(addr):
            raise UnsafeTarget(f"{host!r} resolves to {addr}, which is not loopback")


async def resolve(host: str, port: int) -> str:
    """The first address *host* resolves to (an IP literal is returned as is)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host!r} resolves to nothing")
    return str(infos[0][4][0])
