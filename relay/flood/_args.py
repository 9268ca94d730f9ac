"""``relay flood``'s command line: the argparse parser of its three modes, nothing else.

Building the parser imports no load-testing code: ``relay.cli`` hands every
``relay flood …`` command line to :func:`relay.flood._cli.main`, which
builds this parser; ``relay serve`` never imports ``relay.flood``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

MAX_SECONDS = 600.0
"""Hard upper bound of any flood duration or hold, in seconds."""

IN_FLIGHT = 200
RAMP_IN_FLIGHT = 2000
DEFAULT_WS = "ws://127.0.0.1:8765/ws"
DEFAULT_HTTP = "http://127.0.0.1:8080"

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


def seconds(text: str) -> float:
    """A number of seconds in (0, MAX_SECONDS]; ArgumentTypeError otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_SECONDS:g}] seconds")
    return value


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """A parser of strictly positive *kind* values."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def ramp_spec(text: str) -> tuple[float, float, float]:
    """``START:STOP:STEP`` (attempts per second); ArgumentTypeError otherwise."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not START:STOP:STEP: {text!r}") from None
    if not (start > 0 and stop >= start and step > 0):
        raise argparse.ArgumentTypeError("needs 0 < START <= STOP and STEP > 0")
    return start, stop, step


def build_parser(prog: str = "relay flood") -> argparse.ArgumentParser:
    """The parser of ``relay flood {handshake,messages,idle} …``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", metavar="PATH", help="also write the figures as JSON (- for stdout)"
    )
    sources = common.add_mutually_exclusive_group()
    sources.add_argument(
        "--source-ips",
        metavar="IP,IP",
        help="bind connections to these local addresses in turn (e.g. 127.0.0.2,127.0.0.3)",
    )
    sources.add_argument(
        "--sources",
        type=positive(int),
        metavar="N",
        help="bind connections to 127.0.0.1 … 127.0.0.N in turn (N ≤ 254)",
    )
    common.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback target (this machine's policy: loopback only; do not use here)",
    )
    common.add_argument("--quiet", action="store_true", help="no live progress line")

    flood = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
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
        "--rate",
        type=positive(float),
        help="attempts/s in all, on a fixed schedule (open loop; default: as fast as possible)",
    )
    hs.add_argument(
        "--max-in-flight",
        "--concurrency",
        dest="concurrency",
        type=positive(int),
        metavar="N",
        help=f"attempts in flight at most, over all processes ({IN_FLIGHT}; "
        f"{RAMP_IN_FLIGHT} with --ramp, so the cap does not throttle the open loop first)",
    )
    hs.add_argument(
        "--procs",
        type=positive(int),
        metavar="N",
        help="generator processes (default: one per core this command may run on)",
    )
    hs.add_argument(
        "--nice",
        type=int,
        choices=range(20),
        default=10,
        metavar="N",
        help="niceness of the generator processes (10): the progress line, the ramp's pair "
        "and a server sharing their core run first",
    )
    _add_duration(hs)
    hs.add_argument("--count", type=positive(int), help="stop after this many attempts")
    token = hs.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="JWT", help="a valid access token (Bearer)")
    token.add_argument("--bad-token", action="store_true", help="send an invalid token")
    token.add_argument("--no-token", action="store_true", help="send no token (the default)")
    hs.add_argument("--origin", metavar="URL", help="send this Origin header")
    hs.add_argument("--timeout", type=seconds, default=5.0, metavar="S", help="per attempt (5)")
    ramp = hs.add_argument_group(
        "ramp",
        "Step the rate up until the relay breaks, while an established pair (alice and bob, "
        "two throw-away accounts) measures its round trips through the relay.",
    )
    ramp.add_argument(
        "--ramp",
        type=ramp_spec,
        metavar="START:STOP:STEP",
        help="attempts/s of each step, e.g. 2000:20000:2000 (a baseline step without flood first)",
    )
    ramp.add_argument(
        "--step-duration", type=seconds, default=10.0, metavar="S", help="seconds a step (10)"
    )
    _add_http(ramp)
    ramp.add_argument("--no-pair", action="store_true", help="no established pair")
    ramp.add_argument(
        "--pair-rate", type=positive(float), default=20.0, metavar="R", help="round trips/s (20)"
    )
    ramp.add_argument(
        "--server-pid",
        type=positive(int),
        metavar="PID",
        help="the relay's process id, to report its CPU per step (same machine only)",
    )
    ramp.add_argument(
        "--break-p99",
        type=positive(float),
        default=50.0,
        metavar="MS",
        help="a step breaks when the pair's round-trip p99 exceeds this (50 ms)",
    )
    ramp.add_argument(
        "--break-unclean",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="... or when this share of attempts gets no HTTP answer (0.01)",
    )
    ramp.add_argument(
        "--keep-going", action="store_true", help="run every step, even past a broken one"
    )

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
    msg.add_argument("--pairs", type=positive(int), default=2, help="sender/receiver pairs (2)")
    msg.add_argument("--rate", type=positive(float), default=100.0, help="msgs/s in all (100)")
    _add_duration(msg)
    msg.add_argument("--count", type=positive(int), help="stop after this many messages")
    msg.add_argument(
        "--drain", type=seconds, default=5.0, metavar="S", help="wait for late deliveries (5)"
    )
    msg.add_argument("--setup-timeout", type=seconds, default=120.0, metavar="S")

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
    idle.add_argument("--connections", type=positive(int), default=100, help="how many (100)")
    idle.add_argument("--hold", type=seconds, default=10.0, metavar="S", help="seconds (max 600)")
    idle.add_argument(
        "--per-user-cap",
        type=positive(int),
        default=64,
        help="the relay's max_connections_per_user (64)",
    )
    idle.add_argument(
        "--concurrency", type=positive(int), default=100, help="handshakes in flight (100)"
    )
    idle.add_argument("--ramp-timeout", type=seconds, default=60.0, metavar="S")
    idle.add_argument("--setup-timeout", type=seconds, default=120.0, metavar="S")
    return flood


def _add_ws(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ws", default=DEFAULT_WS, metavar="URL", help=f"WebSocket ({DEFAULT_WS})")


def _add_http(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--http", default=DEFAULT_HTTP, metavar="URL", help=f"HTTP API ({DEFAULT_HTTP})"
    )


def _add_duration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=seconds, default=10.0, metavar="S", help="seconds (10; max 600)"
    )
