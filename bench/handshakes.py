"""Handshake rate: authenticated handshakes/s accepted by relay, and the peers' rate.

``relay.flood.run_handshake`` (raw upgrade + close, 50 in flight, closed loop)
against relay with a valid access token (limits raised: this is not about
the per-IP bucket), and against each peer (no token: peers have no auth).

    python bench/handshakes.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _harness as h
import _load as L


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    server = h.start(kind, extra_env=h.NO_LIMITS) if kind == "relay" else h.start(kind)
    runs = []
    try:
        token = L.run_trio(L.relay_token, server) if kind == "relay" else None
        for _ in range(args.runs):
            r = L.run_trio(L.handshakes, server, duration=args.seconds, concurrency=50,
                           token=token)
            runs.append({k: v for k, v in r.items() if k != "flood"} | {"flood": r["flood"]})
            print(f"  {kind}: {r['accepted_per_s']:.0f}/s accepted, other {r['non_101']}, "
                  f"server {r['server_cpu_share']:.0%} client {r['client_cpu_share']:.0%}",
                  file=sys.stderr)
    finally:
        server.stop()
    keys = ("accepted_per_s", "accepted_p99_ms", "server_cpu_us_per_handshake",
            "server_cpu_share", "client_cpu_share")
    return {"server": server.describe(), "runs": runs,
            "median": {k: h.median([r[k] for r in runs]) for k in keys}}


def markdown(data: dict[str, Any]) -> str:
    servers = data["servers"]
    relay = (servers.get("relay") or {}).get("median", {}).get("accepted_per_s")
    rows = []
    for kind, s in servers.items():
        if "error" in s:
            rows.append([kind, f"error: {s['error']}"] + [None] * 5)
            continue
        m = s["median"]
        rows.append([kind, m["accepted_per_s"], m["accepted_p99_ms"],
                     m["server_cpu_us_per_handshake"],
                     f"{m['server_cpu_share']:.0%} / {m['client_cpu_share']:.0%}",
                     sum(sum(r["non_101"].values()) for r in s["runs"]),
                     None if kind == "relay" or not relay else relay / m["accepted_per_s"]])
    p = data["params"]
    return "\n".join([
        "# Handshakes/s accepted", "", h.machine_md(data["machine"]), "",
        f"Generator: {data['generator']}. Closed loop, 50 in flight; each attempt is TCP "
        "connect + HTTP upgrade + read status line + masked close frame + hang up. Relay: a "
        "valid access token in `Authorization: Bearer` (so each 101 is an authenticated "
        "connection: token check, registration, `ready` frame, replay query), handshake/login/"
        "per-user limits raised, logging at info (one `ws.connected` + one `ws.closed` line "
        "per connection, as by default). Peers: no token (no auth). "
        f"{p['runs']} run(s) of {p['seconds']} s, median.", "",
        h.md_table(["server", "accepted handshakes/s", "p99 ms", "server CPU µs/handshake",
                    "server / generator CPU", "non-101 answers (all runs)",
                    "relay ÷ peer"], rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="relay," + ",".join(h.PEER_KINDS))
    args = parser.parse_args()
    args.seconds = 2.0 if args.quick else 5.0
    args.runs = 1 if args.quick else 3
    h.pin_self()
    data: dict[str, Any] = {
        "benchmark": "handshakes", "quick": args.quick, "started_at": h.now_utc(),
        "command": h.command_line(), "machine": h.machine(),
        "generator": "relay.flood.run_handshake (the `relay flood handshake` engine), in-process",
        "params": {"seconds": args.seconds, "runs": args.runs, "concurrency": 50},
        "servers": {},
    }
    for kind in [k for k in args.only.split(",") if k]:
        print(f"handshakes: {kind}", file=sys.stderr)
        try:
            data["servers"][kind] = measure(kind, args)
        except Exception as exc:
            data["servers"][kind] = {"error": repr(exc)}
    data["finished_at"] = h.now_utc()
    h.write_results("handshakes", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
