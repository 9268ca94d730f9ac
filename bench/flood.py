"""Flood resilience: established traffic's p99 with and without a handshake flood.

One relay with its default handshake limit (120/min per IP: burst 120, then
2/s). 100 established connections (50 pairs, from 127.0.0.1) exchange
messages at a modest rate (default 200 msgs/s, below relay's knee in
throughput.py) for the window; the p99 send → delivered is measured:

* ``baseline``: no flood;
* ``flood_10x``: ``relay flood handshake`` (separate process, core 1) at
  20 handshakes/s from each of 20 source addresses (127.0.0.20-39): 10× the
  per-IP sustained limit, from many IPs at once (400/s in all);
* ``flood_max``: the same 20 sources, as fast as the flood tool goes
  (closed loop, 50 in flight).

Rejected handshakes absorbed = the flood's 429 answers per second.

    python bench/flood.py [--quick] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import _load as L

FLOOD_SOURCES = [f"127.0.0.{i}" for i in range(20, 40)]
PER_IP_LIMIT_PER_S = 2.0  # 120 per minute sustained (the default)
RELAY_ENV = {  # everything default but login (account setup) and the send bucket
    "LOGIN_RATE_LIMIT_PER_MINUTE": "1000000",
}


def flood_command(ws: str, seconds: float, rate: float | None, out: Path) -> list[str]:
    cmd = ["taskset", "-c", str(h.CLIENT_CORE), sys.executable, "-m", "relay", "flood",
           "handshake", "--ws", ws, "--duration", f"{seconds:g}", "--concurrency", "50",
           "--source-ips", ",".join(FLOOD_SOURCES), "--json", str(out), "--quiet"]
    if rate is not None:
        cmd[cmd.index("--concurrency"):cmd.index("--concurrency")] = ["--rate", f"{rate:g}"]
    return cmd


def one(server: h.Server, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    flood_proc: subprocess.Popen[bytes] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="flood-bench-"))
    out = tmp / "flood.json"
    cmd = None
    if mode != "baseline":
        rate = PER_IP_LIMIT_PER_S * 10 * len(FLOOD_SOURCES) if mode == "flood_10x" else None
        cmd = flood_command(server.ws_url, args.seconds + 12, rate, out)

    def start_flood() -> None:
        nonlocal flood_proc
        if cmd is not None:
            flood_proc = subprocess.Popen(cmd, cwd=h.ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)

    # the flood starts 2 s before the established connections' setup ends:
    # the accounts and connections are set up while the flood runs.
    start_flood()
    time.sleep(2.0 if cmd else 0)
    try:
        r = L.run_trio(L.messages, server, pairs=50, rate=args.rate, duration=args.seconds,
                       drain=3.0)
    finally:
        if flood_proc is not None:
            try:
                flood_proc.wait(args.seconds + 40)
            except subprocess.TimeoutExpired:
                flood_proc.kill()
    result = {k: v for k, v in r.items() if k != "flood"} | {
        "mode": mode, "flood_command": cmd,
        "messages_setup_s": r["flood"]["setup"]["seconds"],
        "connections": r["flood"]["connections"], "disconnects": r["flood"]["disconnects"],
    }
    if cmd is not None and out.exists():
        f = json.loads(out.read_text())["results"]
        result["flood_results"] = f
        result["rejected_429_per_s"] = f["outcomes"]["429"]["per_s"]
        result["flood_attempts_per_s"] = f["attempts_per_s"]
        result["flood_outcomes"] = {k: v["count"] for k, v in f["outcomes"].items() if v["count"]}
    elif cmd is not None:
        result["flood_error"] = "the flood produced no JSON"
    os.system(f"rm -rf {tmp}")
    return result


def markdown(data: dict[str, Any]) -> str:
    rows = []
    for mode, s in data["modes"].items():
        m = s["median"]
        rows.append([mode, m.get("flood_attempts_per_s"), m.get("rejected_429_per_s"),
                     m["delivered_per_s"], m["p50_ms"], m["p99_ms"],
                     f"{m['server_cpu_share_send']:.0%}" if m["server_cpu_share_send"] else None,
                     sum(r["lost"] for r in s["runs"])])
    p = data["params"]
    return "\n".join([
        "# Flood resilience", "", h.machine_md(data["machine"]), "",
        f"Relay with its default handshake limit (120/min per IP), logging at info, login limit "
        f"raised for account setup. Established traffic: {data['generator_messages']}, 50 pairs "
        f"(100 connections, from 127.0.0.1) at {p['rate']} msgs/s for {p['seconds']} s. Flood: "
        f"{data['generator_flood']}, a separate process on core 1 with the messages generator, "
        f"from {len(FLOOD_SOURCES)} source addresses (127.0.0.20-39), no token; "
        f"`flood_10x` at {PER_IP_LIMIT_PER_S * 10:g}/s per source (10× the per-IP sustained "
        f"limit of {PER_IP_LIMIT_PER_S:g}/s, {PER_IP_LIMIT_PER_S * 10 * len(FLOOD_SOURCES):g}/s "
        "in all; each source's first 120 are admitted by the bucket's burst), `flood_max` as "
        "fast as the flood process goes (50 in flight). The flood starts 2 s before the "
        "established connections are set up and lasts through their window. "
        f"{p['runs']} run(s) per mode, median.", "",
        h.md_table(["mode", "flood attempts/s", "rejected (429)/s", "established delivered/s",
                    "established p50 ms", "established p99 ms", "relay CPU (window)",
                    "lost"], rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    args.seconds = 3.0 if args.quick else 10.0
    args.runs = 1 if args.quick else 3
    h.pin_self()
    data: dict[str, Any] = {
        "benchmark": "flood", "quick": args.quick, "started_at": h.now_utc(),
        "command": h.command_line(), "machine": h.machine(),
        "generator_messages": "relay.flood messages engine (bench/_load.py), in-process",
        "generator_flood": "`relay flood handshake` CLI",
        "params": {"rate": args.rate, "seconds": args.seconds, "runs": args.runs,
                   "flood_sources": FLOOD_SOURCES},
        "modes": {},
    }
    for mode in ("baseline", "flood_10x", "flood_max"):
        runs = []
        for _ in range(args.runs):
            server = h.start_relay(RELAY_ENV)
            try:
                runs.append(one(server, mode, args))
                data.setdefault("server", server.describe())
            finally:
                server.stop()
            r = runs[-1]
            print(f"  {mode}: p99 {r['p99_ms']} ms, 429/s {r.get('rejected_429_per_s')}, "
                  f"delivered {r['delivered_per_s']:.0f}/s", file=sys.stderr)
        keys = ("flood_attempts_per_s", "rejected_429_per_s", "delivered_per_s", "p50_ms",
                "p99_ms", "server_cpu_share_send", "client_cpu_share_send")
        data["modes"][mode] = {"runs": runs,
                               "median": {k: h.median([r.get(k) for r in runs]) for k in keys}}
    data["finished_at"] = h.now_utc()
    h.write_results("flood", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
