"""Log sampling: one line per (event, source) per interval, with a count.

A handshake flood refused at 5,000/s must not write 5,000 log lines a
second: the first refusal from a source is logged, later ones within
*interval* are only counted, and the next line carries ``suppressed=N``.
:meth:`LogSampler.admit` is pure (the caller passes *now*); :meth:`LogSampler.warn`
reads the clock given at construction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class LogSampler:
    """Decides whether a security event from a source is worth a log line."""

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        interval: float = 10.0,
        max_keys: int = 10_000,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._max_keys = max_keys
        # key -> (time of the last logged line, events suppressed since)
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def admit(self, event: str, source: str, now: float) -> int | None:
        """None to suppress this occurrence; else how many were suppressed before it."""
        key = (event, source)
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            self._seen[key] = (entry[0], entry[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        if len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)  # the longest-quiet source
        return 0 if entry is None else entry[1]

    def due(self, event: str, source: str) -> int | None:
        """:meth:`admit` on the clock given at construction.

        For the hottest paths (a flood's refusals): they ask first and build
        the log line's fields only when one is due.
        """
        if self._clock is None:
            raise RuntimeError("LogSampler needs the clock given at construction to log")
        return self.admit(event, source, self._clock())

    def warn(self, log: Any, event: str, source: str, /, **fields: Any) -> None:
        """Log *event* as a warning if :meth:`admit` lets it through, with ``suppressed``."""
        self._emit(log, "warning", event, source, fields)

    def error(self, log: Any, event: str, source: str, /, **fields: Any) -> None:
        """Like :meth:`warn`, at error level (an unexpected failure a peer can repeat)."""
        self._emit(log, "error", event, source, fields)

    def _emit(self, log: Any, level: str, event: str, source: str, fields: dict[str, Any]) -> None:
        suppressed = self.due(event, source)
        if suppressed is not None:
            # Looked up only now: on structlog's lazy proxy every attribute
            # access binds a new logger, which a suppressed event must not pay.
            getattr(log, level)(event, ip=source, suppressed=suppressed, **fields)
