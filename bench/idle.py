"""Idle memory: server RSS per idle connection (relay authenticated, heartbeats on).

kB per connection = (VmRSS at the end of the hold − VmRSS just before the
ramp) / connections that survived the hold, one fresh server per size.
Relay: default config (heartbeat every 25 s, held 30 s so every connection
is pinged at least once), handshake/login limits raised so the ramp is not
paced. 50,000 on one process cannot be attempted here: the open-file limit
is 20,000 (hard) for the relay and for the generator alike.

    python bench/idle.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import sys
from typing import Any

import _harness as h
import _load as L

SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 12))


def markdown(data: dict[str, Any]) -> str:
    rows = []
    for r in data["runs"]:
        if "error" in r:
            rows.append([r["server"], r["connections"], f"error: {r['error']}"] + [None] * 5)
            continue
        rows.append([r["server"], r["connections"], r["established"], r["survived"],
                     r["rss_before_kb"] / 1024 if r["rss_before_kb"] else None,
                     r["rss_end_of_hold_kb"] / 1024 if r["rss_end_of_hold_kb"] else None,
                     r["kb_per_connection"], r["flood"]["ramp_s"]])
    p = data["params"]
    return "\n".join([
        "# Idle memory per connection", "", h.machine_md(data["machine"]), "",
        f"Generator: {data['generator']}, from {len(SOURCES)} source addresses "
        f"(127.0.0.2-11), 100 handshakes in flight during the ramp. Relay: authenticated "
        f"connections (64 per account), heartbeats on (default 25 s interval), held "
        f"{p['relay_hold']} s; peers held {p['peer_hold']} s (no heartbeats: peers have none). "
        "One fresh server per row; one run per row. kB/connection = (RSS at the end of the hold "
        "− RSS before the ramp) / survivors.", "",
        h.md_table(["server", "connections", "established", "survived the hold",
                    "RSS before MiB", "RSS end of hold MiB", "kB per connection",
                    "ramp s"], rows),
        "",
        "50,000 connections on one process: not measurable here. The open-file limit is "
        f"{data['machine']['open_files_limit']} (soft, hard) and cannot be raised, so neither the "
        "relay nor the one generator process can hold more than ~19,900 sockets. It would need "
        "a host with `ulimit -n` ≥ 51,000 for the relay and several generator processes (or "
        "hosts), each with its own limit, plus ≥ 2 source addresses (~28k ephemeral ports each).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="relay," + ",".join(h.PEER_KINDS))
    parser.add_argument("--relay-sizes", default=None, help="e.g. 10000,19000")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows measured now in the existing idle.json")
    args = parser.parse_args()
    h.pin_self()
    relay_sizes = [300] if args.quick else [1000, 10000, 19000]
    if args.relay_sizes:
        relay_sizes = [int(x) for x in args.relay_sizes.split(",")]
    peer_sizes = [300] if args.quick else [1000, 10000]
    relay_hold = 3.0 if args.quick else 30.0
    peer_hold = 3.0 if args.quick else 10.0
    data: dict[str, Any] = {
        "benchmark": "idle", "quick": args.quick, "started_at": h.now_utc(),
        "command": h.command_line(), "machine": h.machine(),
        "generator": "relay.flood idle engine (bench/_load.py idle)",
        "params": {"relay_sizes": relay_sizes, "peer_sizes": peer_sizes,
                   "relay_hold": relay_hold, "peer_hold": peer_hold,
                   "sources": list(SOURCES),
                   "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)},
        "runs": [],
    }
    for kind in [k for k in args.only.split(",") if k]:
        for n in relay_sizes if kind == "relay" else peer_sizes:
            server = h.start(kind, extra_env=h.NO_LIMITS) if kind == "relay" else h.start(kind)
            try:
                r = L.run_trio(L.idle, server, connections=n,
                               hold=relay_hold if kind == "relay" else peer_hold,
                               source_ips=SOURCES)
                r["server"] = kind
                r["server_info"] = server.describe()
            except Exception as exc:
                r = {"server": kind, "connections": n, "error": repr(exc)}
            finally:
                server.stop()
            data["runs"].append(r)
            print(f"  {kind} {n}: {r.get('kb_per_connection')} kB/conn, survived "
                  f"{r.get('survived')}, failures {r.get('flood', {}).get('failures')}",
                  file=sys.stderr)
    data["finished_at"] = h.now_utc()
    if args.merge and (h.RESULTS / "idle.json").exists():
        import json
        old = json.loads((h.RESULTS / "idle.json").read_text())
        done = {(r["server"], r["connections"]) for r in data["runs"]}
        kept = [r for r in old["runs"] if (r["server"], r["connections"]) not in done]
        data["runs"] = sorted(kept + data["runs"],
                              key=lambda r: (r["server"] != "relay", r["server"], r["connections"]))
        data["merged_from_earlier_run"] = {"started_at": old["started_at"],
                                           "command": old["command"]}
        data["params"]["relay_hold"] = old["params"]["relay_hold"]
        data["params"]["peer_hold"] = old["params"]["peer_hold"]
    h.write_results("idle", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
