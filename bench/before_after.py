"""Before/after the hot-path fix (444e5fd): throughput at a fixed offered load.

Relay from three trees, one after the other, same generator (this checkout's
flood messages engine), same settings as throughput.py: 444e5fd^ (before),
444e5fd (the fix), and this working tree (HEAD, plus whatever is uncommitted
in relay/). The old trees are ``git worktree add`` checkouts under /tmp, run
with their directory as cwd and first on PYTHONPATH; removed afterwards.

    python bench/before_after.py [--quick] [--rate 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import _harness as h
import _load as L

FIX = "444e5fd"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=h.ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=300)
    args = parser.parse_args()
    seconds, runs = (3.0, 1) if args.quick else (10.0, 3)
    h.pin_self()
    trees = [("before (444e5fd^)", git("rev-parse", f"{FIX}^")),
             ("after (444e5fd)", git("rev-parse", FIX)),
             ("HEAD (working tree)", None)]
    data: dict[str, Any] = {"benchmark": "before_after", "quick": args.quick,
                            "started_at": h.now_utc(), "command": h.command_line(),
                            "machine": h.machine(), "rate": args.rate, "seconds": seconds,
                            "runs_each": runs, "trees": {}}
    for label, commit in trees:
        path = None
        if commit is not None:
            path = Path(f"/tmp/relay-before-{commit[:10]}")
            if not path.exists():
                git("worktree", "add", "--detach", str(path), commit)
        results = []
        try:
            for _ in range(runs):
                server = h.start_relay(h.NO_LIMITS, tree=path)
                try:
                    r = L.run_trio(L.messages, server, pairs=50, rate=args.rate,
                                   duration=seconds, drain=3.0)
                finally:
                    server.stop()
                results.append({k: v for k, v in r.items() if k != "flood"})
                print(f"  {label}: p99 {r['p99_ms']} cpu/msg {r.get('server_cpu_us_per_msg')}",
                      file=sys.stderr)
        finally:
            if path is not None:
                git("worktree", "remove", "--force", str(path))
        keys = ("delivered_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg",
                "server_cpu_share_send")
        data["trees"][label] = {"commit": commit or data["machine"]["git_commit"],
                                "runs": results,
                                "median": {k: h.median([r.get(k) for r in results])
                                           for k in keys}}
    data["finished_at"] = h.now_utc()
    rows = [[label, t["commit"][:10], t["median"]["delivered_per_s"], t["median"]["p50_ms"],
             t["median"]["p99_ms"], t["median"]["server_cpu_us_per_msg"],
             f"{t['median']['server_cpu_share_send']:.0%}"]
            for label, t in data["trees"].items()]
    md = "\n".join(["# Before / after the hot-path fix", "", h.machine_md(data["machine"]), "",
                    f"Relay from each tree, 50 pairs at {args.rate:g} msgs/s, {runs} run(s) of "
                    f"{seconds:g} s each on a fresh relay and store, median. Generator: this "
                    "checkout's relay.flood messages engine (bench/_load.py) for every tree.", "",
                    h.md_table(["tree", "commit", "delivered/s", "p50 ms", "p99 ms",
                                "server CPU µs/msg", "server CPU share"], rows)])
    h.write_results("before_after", data, md)
    print(md)


if __name__ == "__main__":
    main()
