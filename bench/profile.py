"""Profile relay (and the trio-websocket peer, for comparison) under the throughput load.

``py-spy record -p PID -d S -f raw`` on the server while the flood messages
engine sends 50 pairs at a fixed rate; the raw stacks are aggregated here
(inclusive and self share of samples by function) into bench/results/profile.md.
py-spy samples wall-clock stacks of every thread, idle ones excluded as py-spy
detects them; shares are of all non-idle samples.

    python bench/profile.py [--quick] [--rate 300]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h
import _load as L
import _pyspy
import trio


async def profiled(server: h.Server, rate: float, seconds: float, out: Path) -> dict[str, Any]:
    cmd = [shutil.which("py-spy") or "py-spy", "record", "-p", str(server.pid), "-d",
           f"{seconds - 2:g}", "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"]

    def start() -> None:
        nursery.start_soon(lambda: trio.run_process(cmd, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL))

    async with trio.open_nursery() as nursery:
        r = await L.messages(server, pairs=50, rate=rate, duration=seconds, drain=3.0,
                             on_send=start)
    return {k: v for k, v in r.items() if k != "flood"} | {"py_spy_command": cmd}


def section(kind: str, prof: dict[str, Any], run: dict[str, Any], top: int) -> str:
    lines = [f"## {kind}", "",
             f"{prof['samples']} samples; during the profile: delivered "
             f"{run['delivered_per_s']:.0f} msgs/s, p99 {run['p99_ms']} ms, server CPU "
             f"{run.get('server_cpu_us_per_msg', 0):.0f} µs/msg (with py-spy attached).", "",
             "Inclusive (function or anything it calls on the stack):", "",
             h.md_table(["% samples", "function"], [[p, f] for f, _, p in prof["inclusive"][:top]]),
             "", "Self (the sampled frame itself):", "",
             h.md_table(["% samples", "function"], [[p, f] for f, _, p in prof["self"][:20]])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=300)
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 12.0
    h.pin_self()
    data: dict[str, Any] = {"benchmark": "profile", "quick": args.quick,
                            "started_at": h.now_utc(), "command": h.command_line(),
                            "machine": h.machine(), "rate": args.rate, "servers": {}}
    md = ["# Profile of the hot path", "", h.machine_md(data["machine"]), "",
          f"Load: flood messages engine, 50 pairs at {args.rate:g} msgs/s for {seconds:g} s; "
          f"py-spy 0.4 at 200 Hz for {seconds - 2:g} s of it (`--nonblocking`, raw output "
          "aggregated by bench/_pyspy.py). Relay with limits raised, as in throughput.py.", ""]
    tmp = Path(tempfile.mkdtemp(prefix="profile-"))
    for kind in ("relay", "trio-websocket"):
        server = h.start(kind, extra_env=h.NO_LIMITS) if kind == "relay" else h.start(kind)
        out = tmp / f"{kind}.txt"
        try:
            run = L.run_trio(profiled, server, args.rate, seconds, out)
        finally:
            server.stop()
        if not out.exists():
            md += [f"## {kind}", "", "py-spy wrote nothing (ptrace not permitted?)", ""]
            continue
        prof = _pyspy.summarize(out)
        shutil.copy(out, h.RESULTS / f"profile_{kind}.raw.txt")
        data["servers"][kind] = {"run": run, "profile": prof}
        md += [section(kind, prof, run, 40), ""]
        print(f"profile {kind}: {prof['samples']} samples", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    h.write_results("profile", data, "\n".join(md))
    print("\n".join(md)[:3000])


if __name__ == "__main__":
    main()
