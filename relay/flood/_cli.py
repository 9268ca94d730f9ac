"""``relay flood``: its argparse subcommands and the dispatch to each mode.

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

from ._common import MAX_SECONDS, FloodError, TargetUnreachable
from ._handshake import HandshakeOptions, run_handshake
from ._idle import IdleOptions, run_idle
from ._messages import MessagesOptions, run_messages
from ._report import document, now_iso, write_json
from ._target import UnsafeTarget, parse_endpoint, parse_source_ips

DEFAULT_WS = "ws://127.0.0.1:8765/ws"
DEFAULT_HTTP = "http://127.0.0.1:8080"
SECRET_FLAGS = ("--token",)

SAFETY = (
    "Targets must be loopback (127.0.0.0/8, ::1, localhost) unless --allow-remote is given; "
    "on this machine the policy is loopback only."
)
DESCRIPTION = """\
Load-test a relay you operate: WebSocket handshakes, message pairs, or idle
connections. Every run is bounded (--duration/--hold at most 600 s, optional
--count) and stops by itself. Targets must be loopback (127.0.0.0/8, ::1,
localhost) unless --allow-remote is given; on this machine the policy is
loopback only.
"""


class _Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...
    def tables(self) -> list[Table]: ...


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_SECONDS:g}] seconds")
    return value


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``flood`` and its three modes to the ``relay`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", metavar="PATH", help="also write the figures as JSON (- for stdout)"
    )
    common.add_argument(
        "--source-ips",
        metavar="IP,IP",
        help="bind connections to these local addresses in turn (e.g. 127.0.0.2,127.0.0.3)",
    )
    common.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback target (this machine's policy: loopback only; do not use here)",
    )
    common.add_argument("--quiet", action="store_true", help="no live progress line")

    flood = sub.add_parser(
        "flood", help="load-test a relay you operate (loopback only)", description=DESCRIPTION
    )
    modes = flood.add_subparsers(dest="flood_mode", required=True)

    hs = modes.add_parser(
        "handshake",
        parents=[common],
        help="open and close WS handshakes",
        description="Open WebSocket handshakes (raw upgrade, status line only, then close) "
        "and count the answers: 101/401/403/429/503/other/error/timeout, with latency. " + SAFETY,
    )
    _add_ws(hs)
    hs.add_argument(
        "--rate", type=_positive(float), help="attempts/s (default: as fast as possible)"
    )
    hs.add_argument("--concurrency", type=_positive(int), default=50, help="in flight (50)")
    _add_duration(hs)
    hs.add_argument("--count", type=_positive(int), help="stop after this many attempts")
    token = hs.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="JWT", help="a valid access token (Bearer)")
    token.add_argument("--bad-token", action="store_true", help="send an invalid token")
    token.add_argument("--no-token", action="store_true", help="send no token (the default)")
    hs.add_argument("--origin", metavar="URL", help="send this Origin header")
    hs.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="per attempt (5)")

    msg = modes.add_parser(
        "messages",
        parents=[common],
        help="message pairs: rate, latency, loss",
        description="Create 2*pairs throw-away accounts (flood-<hex>), connect each, and send "
        "between pairs at --rate; report accepted/delivered per second, send->delivered "
        "latency, and every lost or duplicated message. " + SAFETY,
    )
    _add_http(msg)
    _add_ws(msg)
    msg.add_argument("--pairs", type=_positive(int), default=2, help="sender/receiver pairs (2)")
    msg.add_argument("--rate", type=_positive(float), default=100.0, help="msgs/s in all (100)")
    _add_duration(msg)
    msg.add_argument("--count", type=_positive(int), help="stop after this many messages")
    msg.add_argument(
        "--drain", type=_seconds, default=5.0, metavar="S", help="wait for late deliveries (5)"
    )
    msg.add_argument("--setup-timeout", type=_seconds, default=120.0, metavar="S")

    idle = modes.add_parser(
        "idle",
        parents=[common],
        help="hold N idle authenticated sockets",
        description="Log in ceil(N/per-user-cap) throw-away accounts, open N idle WebSockets "
        "over them, hold them --hold seconds, and report how many were established and "
        "survived. " + SAFETY,
    )
    _add_http(idle)
    _add_ws(idle)
    idle.add_argument("--connections", type=_positive(int), default=100, help="how many (100)")
    idle.add_argument("--hold", type=_seconds, default=10.0, metavar="S", help="seconds (max 600)")
    idle.add_argument(
        "--per-user-cap",
        type=_positive(int),
        default=64,
        help="the relay's max_connections_per_user (64)",
    )
    idle.add_argument(
        "--concurrency", type=_positive(int), default=100, help="handshakes in flight (100)"
    )
    idle.add_argument("--ramp-timeout", type=_seconds, default=60.0, metavar="S")
    idle.add_argument("--setup-timeout", type=_seconds, default=120.0, metavar="S")


def _add_ws(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ws", default=DEFAULT_WS, metavar="URL", help=f"WebSocket ({DEFAULT_WS})")


def _add_http(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http", default=DEFAULT_HTTP, metavar="URL", help=f"HTTP API ({DEFAULT_HTTP})"
    )


def _add_duration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=_seconds, default=10.0, metavar="S", help="seconds (10; max 600)"
    )


def build_options(args: argparse.Namespace) -> HandshakeOptions | MessagesOptions | IdleOptions:
    """Options for the chosen mode; raises ValueError or UnsafeTarget."""
    remote = bool(args.allow_remote)
    sources = parse_source_ips(args.source_ips, allow_remote=remote)
    ws = parse_endpoint(args.ws, "ws")
    if args.flood_mode == "handshake":
        return HandshakeOptions(
            ws=ws,
            rate=args.rate,
            concurrency=args.concurrency,
            duration=args.duration,
            count=args.count,
            token=args.token,
            bad_token=args.bad_token,
            origin=args.origin,
            source_ips=sources,
            timeout=args.timeout,
            allow_remote=remote,
        )
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


def main(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the flood mode *args* asks for; print the tables; write the JSON."""
    try:
        options = build_options(args)
    except (ValueError, UnsafeTarget) as exc:
        print(f"relay flood: {exc}", file=sys.stderr)
        return 2
    runner: Callable[..., Awaitable[_Result]]
    if isinstance(options, HandshakeOptions):
        runner = run_handshake
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
    cpu, wall = _cpu_seconds() - cpu_before, time.monotonic() - wall_before
    client = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_share": round(cpu / wall, 3)}
    out = Console(stderr=args.json == "-")
    for item in result.tables():
        out.print(item)
        out.print()
    # Near 100% of a core, the figures are the load generator's limit, not the relay's.
    share = f"{100 * cpu / wall:.0f}%" if wall > 0 else "-"
    out.print(
        f"flood's own CPU: {cpu:.2f} s in {wall:.2f} s ({share} of one core)", highlight=False
    )
    if args.json:
        command = masked_command(["relay", *argv] if argv is not None else sys.argv)
        doc = document(
            args.flood_mode,
            argv=command,
            started_at=started_at,
            params=options.params(),
            results=result.to_json(),
        )
        doc["client"] = client
        write_json(args.json, doc)
    return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(
    runner: Callable[..., Awaitable[_Result]], options: Any, console: Console | None
) -> _Result:
    return await runner(options, console=console)
