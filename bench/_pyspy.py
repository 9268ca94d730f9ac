"""Aggregate py-spy ``-f raw`` output (collapsed stacks): inclusive and self % by function."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module/path tail)`` without the line."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "/tmp/relay-before/", "lib/python3.11/",
                   f"{Path(__file__).resolve().parents[1]}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def aggregate(raw: str) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [_name(f) for f in stack.split(";") if f]
        # drop py-spy's thread/process header frames
        frames = [f for f in frames if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        total += count
        for f in set(frames):
            inclusive[f] += count
        own[frames[-1]] += count
    return {
        "samples": total,
        "inclusive": [(f, n, 100 * n / total) for f, n in inclusive.most_common(60)] if total else [],
        "self": [(f, n, 100 * n / total) for f, n in own.most_common(40)] if total else [],
    }


def summarize(path: Path) -> dict[str, Any]:
    return aggregate(path.read_text(errors="replace"))
