"""Relay throughput and latency vs the peers: 1:1 pairs at increasing offered rate.

For relay and each peer (trio-websocket, websockets-asyncio, websockets-trio,
node-ws), one server at a time on core 0, the generator on core 1:

1. ramp: 50 pairs at increasing offered rates (one run per step) until the
   p99 send → delivered latency exceeds 100 ms or fewer than 95% of the
   offered messages are delivered in the window; the *knee* is the highest
   delivered rate of a step that passed;
2. fixed: the same 50 pairs at one common rate (default 300 msgs/s, under
   every server's knee) repeated; median p99 and server CPU per message.

Plus the echo floor: the trio-websocket peer with ``--echo`` under a closed
loop of 100 connections.

    python bench/throughput.py [--quick] [--only relay,node-ws]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _harness as h
import _load as L

RATES = [100, 200, 300, 400, 600, 800, 1000, 1400, 2000, 3000]
P99_LIMIT_MS = 100.0
DELIVERED_MIN = 0.95


def ok(step: dict[str, Any]) -> bool:
    return (
        step["p99_ms"] is not None
        and step["p99_ms"] <= P99_LIMIT_MS
        and step["delivered_per_s"] >= DELIVERED_MIN * step["offered_per_s"]
        and step["lost"] == 0
    )


def brief(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if k != "flood"} | {
        "late_sends": step["flood"]["schedule"]["late_sends"],
        "disconnects": step["flood"]["disconnects"],
        "refusals": step["flood"]["refusals"],
    }


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    env = h.NO_LIMITS if kind == "relay" else None
    server = h.start(kind, extra_env=env) if kind == "relay" else h.start(kind)
    out: dict[str, Any] = {"server": server.describe(), "ramp": [], "fixed": []}
    try:
        for rate in RATES:
            step = L.run_trio(L.messages, server, pairs=args.pairs, rate=rate,
                              duration=args.step_seconds, drain=3.0)
            out["ramp"].append(brief(step))
            print(f"  {kind} ramp {rate}/s: delivered {step['delivered_per_s']:.0f}/s "
                  f"p99 {step['p99_ms']} ms cpu {step.get('server_cpu_share_send', 0):.0%} "
                  f"client {step.get('client_cpu_share_send', 0):.0%}", file=sys.stderr)
            if not ok(step):
                break
        passed = [s for s in out["ramp"] if ok(s)]
        knee = max(passed, key=lambda s: s["delivered_per_s"]) if passed else None
        out["knee"] = None if knee is None else {
            "offered_per_s": knee["offered_per_s"],
            "delivered_per_s": knee["delivered_per_s"],
            "p99_ms": knee["p99_ms"],
            "server_cpu_us_per_msg": knee.get("server_cpu_us_per_msg"),
            "client_cpu_share": knee.get("client_cpu_share_send"),
            "client_bound": (knee.get("client_cpu_share_send") or 0) > 0.85,
            "first_failing_step": next((s["offered_per_s"] for s in out["ramp"] if not ok(s)),
                                       None),
        }
        for _ in range(args.runs):
            step = L.run_trio(L.messages, server, pairs=args.pairs, rate=args.fixed_rate,
                              duration=args.fixed_seconds, drain=3.0)
            out["fixed"].append(brief(step))
        out["fixed_median"] = {
            key: h.median([s.get(key) for s in out["fixed"]])
            for key in ("delivered_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg",
                        "server_cpu_share_send", "client_cpu_share_send")
        }
    finally:
        server.stop()
    return out


def measure_echo(args: argparse.Namespace) -> dict[str, Any]:
    server = h.start_peer("trio-websocket", echo=True)
    runs = []
    try:
        for _ in range(args.runs):
            runs.append(L.run_trio(L.echo, server, connections=100,
                                   duration=args.fixed_seconds))
    finally:
        server.stop()
    return {
        "server": server.describe(),
        "runs": runs,
        "median": {k: h.median([r[k] for r in runs])
                   for k in ("echoed_per_s", "p99_ms", "server_cpu_us_per_msg",
                             "server_cpu_share", "client_cpu_share")},
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def markdown(data: dict[str, Any]) -> str:
    servers = data["servers"]
    relay = servers.get("relay", {})
    rk = (relay.get("knee") or {}).get("delivered_per_s")
    rc = (relay.get("fixed_median") or {}).get("server_cpu_us_per_msg")
    rows = []
    for kind, s in servers.items():
        knee = s.get("knee") or {}
        fm = s.get("fixed_median") or {}
        rows.append([
            kind,
            knee.get("delivered_per_s"),
            knee.get("p99_ms"),
            knee.get("first_failing_step"),
            f"{knee.get('client_cpu_share', 0) or 0:.0%}" + (" (client-bound)"
                                                            if knee.get("client_bound") else ""),
            fm.get("p99_ms"),
            fm.get("server_cpu_us_per_msg"),
            None if kind == "relay" else ratio(rk, knee.get("delivered_per_s")),
            None if kind == "relay" else ratio(fm.get("server_cpu_us_per_msg"), rc),
        ])
    p = data["params"]
    text = [
        "# Throughput: 1:1 messages, relay vs peers",
        "",
        h.machine_md(data["machine"]),
        "",
        f"Generator: {data['generator']}. {p['pairs']} pairs; ramp steps of "
        f"{p['step_seconds']} s (one run per step) over {RATES} msgs/s until p99 send → "
        f"delivered > {P99_LIMIT_MS:g} ms or delivered < {DELIVERED_MIN:.0%} of offered; "
        f"knee = delivered msgs/s of the last step that passed. Fixed rate: "
        f"{p['fixed_rate']} msgs/s, {p['runs']} run(s) of {p['fixed_seconds']} s, median. "
        "Server CPU per message = server CPU (utime+stime from /proc) from the start of "
        "sending to the end of the drain / messages delivered. Relay: scratch SQLite store, "
        "default config except limits raised (handshake, login, send rate, per-user cap) and "
        "argon2 at opslimit 1 / 8 KiB (account setup only; not on the message path).",
        "",
        h.md_table(
            ["server", "knee msgs/s", "p99 at knee ms", "first failing step", "client CPU at knee",
             f"p99 ms @ {p['fixed_rate']}/s", f"server CPU µs/msg @ {p['fixed_rate']}/s",
             "relay knee / peer knee", "peer CPU/msg ÷ relay CPU/msg"],
            rows,
        ),
    ]
    echo = data.get("echo")
    if echo:
        m = echo["median"]
        text += [
            "",
            f"Echo floor (trio-websocket peer `--echo`, closed loop, 100 connections, "
            f"{p['runs']} × {p['fixed_seconds']} s, median): {m['echoed_per_s']:,.0f} echoes/s, "
            f"p99 {m['p99_ms']} ms, server CPU {m['server_cpu_us_per_msg']:.0f} µs/echo at "
            f"{m['server_cpu_share']:.0%} of its core, generator {m['client_cpu_share']:.0%} of "
            f"its core. Relay knee / echo floor = "
            f"{(ratio(rk, m['echoed_per_s']) or 0):.1%}.",
        ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="relay," + ",".join(h.PEER_KINDS) + ",echo")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--fixed-rate", type=float, default=300)
    args = parser.parse_args()
    args.step_seconds = 2.0 if args.quick else 5.0
    args.fixed_seconds = 2.0 if args.quick else 10.0
    args.runs = 1 if args.quick else 3
    h.pin_self()
    kinds = [k for k in args.only.split(",") if k]
    data: dict[str, Any] = {
        "benchmark": "throughput",
        "quick": args.quick,
        "started_at": h.now_utc(),
        "command": h.command_line(),
        "machine": h.machine(),
        "generator": "relay.flood messages engine for relay and every peer (bench/_load.py); "
                     "closed-loop trio-websocket echo loop for the echo floor",
        "params": {"pairs": args.pairs, "rates": RATES, "step_seconds": args.step_seconds,
                   "fixed_rate": args.fixed_rate, "fixed_seconds": args.fixed_seconds,
                   "runs": args.runs, "p99_limit_ms": P99_LIMIT_MS,
                   "delivered_min": DELIVERED_MIN},
        "servers": {},
    }
    for kind in kinds:
        if kind == "echo":
            continue
        print(f"throughput: {kind}", file=sys.stderr)
        try:
            data["servers"][kind] = measure(kind, args)
        except Exception as exc:  # a server that cannot run is reported, not hidden
            data["servers"][kind] = {"error": repr(exc)}
    if "echo" in kinds:
        print("throughput: echo floor", file=sys.stderr)
        data["echo"] = measure_echo(args)
    data["finished_at"] = h.now_utc()
    h.write_results("throughput", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
