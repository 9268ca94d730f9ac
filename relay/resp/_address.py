"""Where a Redis is and how to log in: the URLs of ``[bus] url`` and ``[limits] url``.

Pure: parsing and the commands a new connection sends first; no sockets.
The same URL forms as coredis's ``Redis.from_url``, which serves the rest
of relay's Redis calls on the same URL, so both always agree.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, unquote, urlsplit

from ._protocol import Arg

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TLS_OPTIONS = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)


@dataclass(frozen=True)
class RedisAddress:
    """A parsed Redis URL; :meth:`parse` raises ``ValueError`` naming what is wrong."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path?db=N``.

        TLS takes coredis's query options: ``ssl_cert_reqs`` (none, optional,
        required), ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
        ``ssl_check_hostname`` (true, false).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        path = "" if parts.scheme == "unix" else parts.path.strip("/")
        db_text = query.get("db") or path or "0"
        if not db_text.isdigit():
            raise ValueError(f"the Redis database must be a number, got {db_text[:20]!r}")
        password = unquote(parts.password) if parts.password else query.get("password") or None
        username = unquote(parts.username) if parts.username else None
        tls_options = tuple(sorted((k, v) for k, v in query.items() if k in _TLS_OPTIONS))
        if tls_options and parts.scheme != "rediss":
            raise ValueError("ssl_* options need a rediss:// URL")
        address = cls(
            db=int(db_text), username=username, password=password, tls_options=tls_options
        )
        if parts.scheme == "unix":
            return replace(address, path=unquote(parts.path))
        address = replace(
            address,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
        )
        if address.tls:
            address.ssl_context()  # a bad option fails now, not at the first connection
        return address

    def handshake(self) -> list[list[Arg]]:
        """The commands a new connection sends before any other (login, database)."""
        commands: list[list[Arg]] = []
        if self.password:
            commands.append(
                ["AUTH", self.username, self.password] if self.username else ["AUTH", self.password]
            )
        if self.db:
            commands.append(["SELECT", self.db])
        return commands

    def ssl_context(self) -> ssl.SSLContext:
        """A ``rediss://`` URL's TLS settings (default: the system's CAs, hostname checked)."""
        options = dict(self.tls_options)
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        if "ssl_certfile" in options:
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
        check = options.get("ssl_check_hostname", "true").lower()
        if check not in ("true", "false"):
            raise ValueError("ssl_check_hostname must be true or false")
        reqs = options.get("ssl_cert_reqs", "required").lower()
        if reqs not in _CERT_REQS:
            raise ValueError("ssl_cert_reqs must be none, optional or required")
        context.check_hostname = check == "true" and reqs != "none"
        context.verify_mode = _CERT_REQS[reqs]
        return context
