"""Structured JSON log lines, with secrets kept out by construction.

Every line is one JSON object with ``event`` (a category such as
``auth.login_failed``), ``level``, ``timestamp`` and whatever context is
bound: ``request_id`` for HTTP, ``conn_id`` for WebSocket. Fields whose
names look secret are replaced before rendering, as a last line of defence;
the first is that callers never pass secrets to a logger at all.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_WORDS = ("password", "token", "secret", "authorization", "key", "signature", "dsn")
REDACTED = "[redacted]"

Logger = structlog.typing.FilteringBoundLogger


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        lowered = name.lower()
        if name != "event" and any(word in lowered for word in _SECRET_WORDS):
            event[name] = REDACTED
    return event


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog for the process (called once, at start).

    *stream* defaults to stderr; tests pass a buffer to read the lines back.
    *fmt* ``"auto"`` is console lines when the stream is a terminal, JSON otherwise.
    """
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line (text and newline together): worker processes
        # share the supervisor's stderr, and two writes per line interleave.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (hypercorn, trio-websocket) log through the standard library:
    # render their records as the same JSON lines on the same stream.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelNamesMapping()[level.upper()], logging.INFO))


def get_logger(name: str) -> Logger:
    """A logger bound to *name* (the component), e.g. ``relay.http``."""
    logger: Logger = structlog.get_logger(component=name)
    return logger
