"""What flood reads from, and sets on, the machine it runs on (Linux; stdlib only).

CPU time of a process (``/proc/<pid>/stat``) and of each core
(``/proc/stat``), so that a run can say which side was saturated, and the
open-file limit. The parsers are pure functions of the files' text.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_process_cpu(stat_text: str, ticks: int = CLOCK_TICKS) -> float:
    """utime + stime, in seconds, from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields
    are counted from the last ``)``. ValueError if the text is not a stat line.
    """
    try:
        fields = stat_text[stat_text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / ticks
    except (ValueError, IndexError):
        raise ValueError("not a /proc/<pid>/stat line") from None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process *pid* has used; OSError if it is gone."""
    return parse_process_cpu(Path(f"/proc/{pid}/stat").read_text())


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """One core's cumulative ticks: busy (everything but idle and iowait), and in all."""

    busy: int
    total: int
    softirq: int


def parse_core_times(proc_stat_text: str) -> dict[str, CoreTimes]:
    """Per-core ticks (``cpu0``, ``cpu1``…) from the text of ``/proc/stat``."""
    cores: dict[str, CoreTimes] = {}
    for line in proc_stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        ticks = [int(x) for x in rest.split()]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        total = sum(ticks[:8])
        idle = ticks[3] + ticks[4]
        cores[name] = CoreTimes(busy=total - idle, total=total, softirq=ticks[6])
    return cores


def core_times() -> dict[str, CoreTimes]:
    """Per-core ticks now; empty where ``/proc/stat`` is not readable."""
    try:
        return parse_core_times(Path("/proc/stat").read_text())
    except OSError:
        return {}


def core_busy(before: dict[str, CoreTimes], after: dict[str, CoreTimes]) -> dict[str, float]:
    """Each core's busy share between two readings (0.0-1.0), softirq included."""
    shares: dict[str, float] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None or end.total <= start.total:
            continue
        shares[name] = (end.busy - start.busy) / (end.total - start.total)
    return shares


def core_softirq(before: dict[str, CoreTimes], after: dict[str, CoreTimes]) -> dict[str, float]:
    """Each core's share of the time between two readings spent in softirq (0.0-1.0)."""
    shares: dict[str, float] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None or end.total <= start.total:
            continue
        shares[name] = (end.softirq - start.softirq) / (end.total - start.total)
    return shares


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-file limit toward *wanted* (up to the hard one); -1 means none."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def usable_cpus() -> int:
    """How many cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def generator_cores() -> tuple[str, ...]:
    """The cores this process (and the children it starts) may run on, as ``cpuN`` names."""
    try:
        return tuple(f"cpu{n}" for n in sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return ()
