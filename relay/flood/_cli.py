"""``relay flood``: parse its command line, run the mode, print the tables, write the JSON.

``relay.cli`` imports this module only for ``relay flood …``.

Exit codes: 0 when the run completed (refusals by the relay are results,
not errors); 2 for a usage error or a refused target; 1 when the target is
unreachable at start; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio
from rich.console import Console
from rich.table import Table

from ._args import IN_FLIGHT, RAMP_IN_FLIGHT, build_parser
from ._common import FloodError, TargetUnreachable
from ._handshake import HandshakeOptions, run_handshake
from ._host import usable_cpus
from ._idle import IdleOptions, run_idle
from ._messages import MessagesOptions, run_messages
from ._ramp import RampOptions, ramp_rates, run_ramp
from ._report import document, now_iso, write_json
from ._target import UnsafeTarget, numbered_sources, parse_endpoint, parse_source_ips

SECRET_FLAGS = ("--token",)
WIDE = 132
"""Columns of the final tables when they go to a file or a pipe."""


class _Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...
    def tables(self) -> list[Table]: ...


Options = HandshakeOptions | RampOptions | MessagesOptions | IdleOptions


def build_options(args: argparse.Namespace) -> Options:
    """Options for the chosen mode; raises ValueError or UnsafeTarget."""
    remote = bool(args.allow_remote)
    if args.sources is not None:
        sources = numbered_sources(args.sources)
    else:
        sources = parse_source_ips(args.source_ips, allow_remote=remote)
    ws = parse_endpoint(args.ws, "ws")
    if args.flood_mode == "handshake":
        handshake = HandshakeOptions(
            ws=ws,
            rate=args.rate,
            concurrency=args.concurrency or (RAMP_IN_FLIGHT if args.ramp else IN_FLIGHT),
            duration=args.duration,
            count=args.count,
            token=args.token,
            bad_token=args.bad_token,
            origin=args.origin,
            source_ips=sources,
            timeout=args.timeout,
            allow_remote=remote,
            procs=args.procs or usable_cpus(),
            nice=args.nice,
        )
        return handshake if args.ramp is None else _ramp_options(args, handshake)
    http = parse_endpoint(args.http, "http")
    if args.flood_mode == "messages":
        return MessagesOptions(
            http=http,
            ws=ws,
            pairs=args.pairs,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            drain=args.drain,
            source_ips=sources,
            setup_timeout=args.setup_timeout,
            allow_remote=remote,
        )
    return IdleOptions(
        http=http,
        ws=ws,
        connections=args.connections,
        hold=args.hold,
        per_user_cap=args.per_user_cap,
        concurrency=args.concurrency,
        ramp_timeout=args.ramp_timeout,
        source_ips=sources,
        setup_timeout=args.setup_timeout,
        allow_remote=remote,
    )


def _ramp_options(args: argparse.Namespace, handshake: HandshakeOptions) -> RampOptions:
    if args.rate is not None or args.count is not None:
        raise ValueError("--ramp sets each step's rate: leave out --rate and --count")
    return RampOptions(
        handshake=handshake,
        rates=ramp_rates(*args.ramp),
        step_duration=args.step_duration,
        http=None if args.no_pair else parse_endpoint(args.http, "http"),
        pair_rate=args.pair_rate,
        server_pid=args.server_pid,
        break_p99_ms=args.break_p99,
        break_unclean=args.break_unclean,
        keep_going=args.keep_going,
    )


def masked_command(argv: Sequence[str]) -> list[str]:
    """*argv* with the value of every secret flag replaced by ``<given>``."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append("<given>")
            hide = False
        elif arg in SECRET_FLAGS:
            out.append(arg)
            hide = True
        elif arg.startswith(tuple(f"{flag}=" for flag in SECRET_FLAGS)):
            out.append(arg.split("=", 1)[0] + "=<given>")
        else:
            out.append(arg)
    return out


def main(args_after_flood: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Run ``relay flood ARGS…``; print the tables; write the JSON; return the exit status.

    *argv* is the whole command line after ``relay`` (for the JSON report;
    None: ``sys.argv``). A usage error exits with status 2 (argparse).
    """
    args = build_parser().parse_args(args_after_flood)
    try:
        options = build_options(args)
    except (ValueError, UnsafeTarget) as exc:
        print(f"relay flood: {exc}", file=sys.stderr)
        return 2
    runner: Callable[..., Awaitable[_Result]]
    if isinstance(options, HandshakeOptions):
        runner = run_handshake
    elif isinstance(options, RampOptions):
        runner = run_ramp
    elif isinstance(options, MessagesOptions):
        runner = run_messages
    else:
        runner = run_idle
    progress = None if args.quiet else Console(stderr=True)
    started_at = now_iso()
    cpu_before, wall_before = _cpu_seconds(), time.monotonic()
    try:
        result = trio.run(_run, runner, options, progress)
    except UnsafeTarget as exc:
        print(f"relay flood: {exc}", file=sys.stderr)
        return 2
    except (TargetUnreachable, FloodError) as exc:
        print(f"relay flood: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("relay flood: interrupted", file=sys.stderr)
        return 130
    own, workers = (
        after - before for after, before in zip(_cpu_seconds(), cpu_before, strict=True)
    )
    wall = time.monotonic() - wall_before
    cpu = own + workers
    client = {
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_share": round(cpu / wall, 3),
        "coordinator_cpu_s": round(own, 3),
        "generator_processes_cpu_s": round(workers, 3),
    }
    out = Console(stderr=args.json == "-")
    if not out.is_terminal:
        out = Console(stderr=args.json == "-", width=WIDE)  # files and pipes: no wrapping
    for item in result.tables():
        out.print(item)
        out.print()
    out.print(_cpu_line(own, workers, wall), highlight=False)
    if args.json:
        command = masked_command(["relay", *argv] if argv is not None else sys.argv)
        doc = document(
            "ramp" if isinstance(options, RampOptions) else args.flood_mode,
            argv=command,
            started_at=started_at,
            params=options.params(),
            results=result.to_json(),
        )
        doc["client"] = client
        write_json(args.json, doc)
    return 0


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its finished children (the generator processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _cpu_line(own: float, workers: float, wall: float) -> str:
    """flood's own CPU use, so a reader can tell whether flood was the limit."""
    total = own + workers
    cores = f"{total / wall:.2f} cores" if wall > 0 else "-"
    if workers <= 0:
        # Near 100% of a core, the figures are the load generator's limit, not the relay's.
        share = f"{100 * own / wall:.0f}% of one core" if wall > 0 else "-"
        return f"flood's own CPU: {own:.2f} s in {wall:.2f} s ({share})"
    return (
        f"flood's own CPU: {total:.2f} s in {wall:.2f} s ({cores}): "
        f"coordinator {own:.2f} s, generator processes {workers:.2f} s"
    )


async def _run(
    runner: Callable[..., Awaitable[_Result]], options: Any, console: Console | None
) -> _Result:
    return await runner(options, console=console)
