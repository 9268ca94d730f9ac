"""Output of ``relay flood``: the live progress line, the final tables, the JSON file.

The progress line is redrawn about twice a second on a terminal (rich
``Live``, removed when the run ends); on anything else (a pipe, a CI log)
it is printed as a plain line every few seconds instead.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import __version__
from ._common import ProgressLine
from ._stats import LatencySummary

REFRESH_SECONDS = 0.5
PLAIN_EVERY_SECONDS = 5.0


@asynccontextmanager
async def live_progress(console: Console | None, line: ProgressLine) -> AsyncIterator[None]:
    """Show *line()* while the body runs; nothing at all when *console* is None."""
    if console is None:
        yield
        return
    async with trio.open_nursery() as nursery:
        if console.is_terminal:
            with Live(Text(line()), console=console, auto_refresh=False, transient=True) as live:
                nursery.start_soon(_redraw, live, line)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        else:
            nursery.start_soon(_print_every, console, line)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


async def _redraw(live: Live, line: ProgressLine) -> None:
    while True:
        live.update(Text(line()), refresh=True)
        await trio.sleep(REFRESH_SECONDS)


async def _print_every(console: Console, line: ProgressLine) -> None:
    while True:
        await trio.sleep(PLAIN_EVERY_SECONDS)
        console.print(line(), highlight=False, soft_wrap=True)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def fmt_rate(value: float) -> str:
    return f"{value:,.1f}"


def latency_cells(summary: LatencySummary) -> list[str]:
    """p50, p95, p99, max in ms, as table cells."""
    values = (summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms)
    return [fmt_ms(v) for v in values]


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A final-results table; every column after the first is right-aligned."""
    result = Table(
        title=title, title_justify="left", show_edge=False, pad_edge=False, min_width=len(title)
    )
    for i, name in enumerate(columns):
        result.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        result.add_row(*row)
    return result


def pairs_table(title: str, items: Sequence[tuple[str, Any]]) -> Table:
    """A two-column what / value table."""
    return table(title, ["", "value"], [(k, _cell(v)) for k, v in items])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def document(
    mode: str,
    *,
    argv: Sequence[str] | None,
    started_at: str,
    params: dict[str, Any],
    results: dict[str, Any],
) -> dict[str, Any]:
    """The JSON report: what ran, when, where, with what, and the figures."""
    return {
        "tool": "relay flood",
        "version": __version__,
        "mode": mode,
        "command": list(sys.argv if argv is None else argv),
        "started_at": started_at,
        "finished_at": now_iso(),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "params": params,
        "results": _finite(results),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: replace them with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    """Write *doc* to *path* (``-`` for standard output), indented, UTF-8."""
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")
