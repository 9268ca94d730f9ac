"""Handshake flood: the generator's top rate, and the rate at which the relay breaks.

Against a real ``relay serve --dev`` (a subprocess pinned to core 0, every
setting at its default but a scratch store and kernel-chosen ports), two
generator placements:

* ``core1``: ``taskset -c 1 relay flood handshake --procs 1`` (the
  baselines' pinning: relay on core 0, generator on core 1);
* ``both``: ``taskset -c 0,1 relay flood handshake --procs 2`` (generator
  processes free to use both cores, the relay's too).

For each placement:

1. ``max``: ``relay flood handshake --sources 8`` closed loop for 10 s,
   with 200 and with 1,000 attempts in flight: the most attempts/s reached;
2. ``ramp``: ``relay flood handshake --ramp 2000:20000:2000`` (10 s a step,
   a baseline step first, --keep-going, up to 2,000 in flight so that the
   cap does not throttle the open loop before the server does) with an
   established pair at 50 round trips/s and ``--server-pid``: per step
   offered, started, refused, relay CPU, CPU per refused attempt, pair
   p99, and where it broke.

Around each run the CPU every *other* process on the machine used is read
from /proc, so the results say what else was running.

    python bench/flood_ramp.py [--quick] [--placements core1,both] [--runs 1] [--merge]

``--merge`` adds the runs to the existing results (same parameters), so that
runs made in several quiet moments of a shared machine end up in one file.
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

SOURCES = 8
RAMP = "2000:20000:2000"
PAIR_RATE = 50
MAX_IN_FLIGHT = (200, 1000)
RAMP_IN_FLIGHT = 2000
PLACEMENTS = {
    "core1": {"cpus": "1", "procs": 1},
    "both": {"cpus": "0,1", "procs": 2},
}


def start_relay_dev() -> h.Server:
    """``taskset -c 0 python -m relay serve --dev``: a scratch store, kernel-chosen ports."""
    tmp = tempfile.TemporaryDirectory(prefix="relay-flood-ramp-")
    env = {
        "RELAY_STORE_PATH": str(Path(tmp.name) / "relay.db"),
        "RELAY_HTTP_PORT": "0",
        "RELAY_WS_PORT": "0",
    }
    full_env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"} | env
    command = ["taskset", "-c", h.SERVER_CORE, sys.executable, "-m", "relay", "serve", "--dev"]
    log_path = Path(tmp.name) / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=full_env, cwd=h.ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    match = h._wait_line(proc, log_path, h.LISTENING_RELAY)
    return h.Server("relay", proc, int(match.group(2)), int(match.group(1)), command, env,
                    h.ROOT, log_path, _tmp=tmp)


# --- what else ran ------------------------------------------------------------------


def others_cpu(before: h.ProcTable, after: h.ProcTable, ours: set[int], wall: float
               ) -> dict[str, Any]:
    """CPU used by processes outside *ours* (and their children) between two snapshots."""
    ours = h.descendants(after, ours) | h.descendants(before, ours)
    used: dict[str, float] = {}
    for pid, (name, _, cpu) in after.items():
        if pid in ours:
            continue
        start = before.get(pid, (name, 0, 0.0))[2] if pid in before else 0.0
        delta = cpu - start
        if delta > 0.05:
            used[f"{name}[{pid}]"] = round(delta, 2)
    total = sum(used.values())
    top = dict(sorted(used.items(), key=lambda kv: -kv[1])[:8])
    return {"cpu_s": round(total, 2), "cores": round(total / wall, 3) if wall else None,
            "top": top, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def wait_quiet(limit: float, threshold: float = 0.05) -> dict[str, Any]:
    """Wait (at most *limit* s) until the machine is under *threshold* busy for 5 s."""
    started = time.monotonic()
    busy = h.machine_busy(5.0)
    while busy >= threshold and time.monotonic() - started < limit:
        busy = h.machine_busy(5.0)
    return {"waited_s": round(time.monotonic() - started, 1), "busy_before": round(busy, 3),
            "quiet": busy < threshold}


# --- runs ---------------------------------------------------------------------------


def flood(server: h.Server, placement: str, args: list[str], out: Path,
          timeout: float) -> dict[str, Any]:
    """Run one ``relay flood handshake`` command; its JSON, command and the others' CPU."""
    spec = PLACEMENTS[placement]
    cmd = ["taskset", "-c", spec["cpus"], sys.executable, "-m", "relay", "flood", "handshake",
           "--ws", server.ws_url, "--sources", str(SOURCES), "--procs", str(spec["procs"]),
           "--json", str(out), "--quiet", *args]
    before, started = h.process_table(), time.monotonic()
    proc = subprocess.run(cmd, cwd=h.ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - started
    after = h.process_table()
    ours = {os.getpid(), server.pid}
    result: dict[str, Any] = {"command": cmd, "exit": proc.returncode, "wall_s": round(wall, 2),
                              "others": others_cpu(before, after, ours, wall)}
    if proc.returncode != 0 or not out.exists():
        result["stderr"] = proc.stderr[-2000:]
        return result
    result["report"] = prune(json.loads(out.read_text()))
    return result


def prune(report: dict[str, Any]) -> dict[str, Any]:
    """*report* without the outcomes that never happened (their empty latency objects)."""
    def outcomes(results: dict[str, Any]) -> None:
        results["outcomes"] = {k: v for k, v in results["outcomes"].items() if v["count"]}

    results = report["results"]
    if "outcomes" in results:
        outcomes(results)
    for step in results.get("steps", []):
        if step.get("flood"):
            outcomes(step["flood"])
    return report


def run_max(server: h.Server, placement: str, seconds: float, in_flight: int,
            tmp: Path) -> dict[str, Any]:
    r = flood(server, placement,
              ["--duration", f"{seconds:g}", "--max-in-flight", str(in_flight)],
              tmp / f"max-{placement}-{in_flight}.json", seconds + 60)
    report = r.get("report")
    if report:
        res = report["results"]
        gen = res["generator"]
        r["summary"] = {
            "attempts_per_s": res["attempts_per_s"], "started_per_s": res["started_per_s"],
            "outcomes": {k: v["count"] for k, v in res["outcomes"].items() if v["count"]},
            "latency_ms": res["latency_ms"], "errors": res["errors"],
            "answered_per_s": round(
                sum(v["count"] for k, v in res["outcomes"].items()
                    if k not in ("error", "timeout")) / res["elapsed_s"], 1),
            "generator_cpu_share": [w["cpu_share"] for w in gen["workers"]],
            "cores_busy": res["cores_busy"],
            "verdict": gen["verdict"], "client": report["client"],
        }
    return r


def run_ramp(server: h.Server, placement: str, ramp: str, step: float,
             tmp: Path) -> dict[str, Any]:
    steps = len(range(*[int(x) for x in ramp.split(":")])) + 2
    args = ["--ramp", ramp, "--step-duration", f"{step:g}", "--http", server.http_url,
            "--pair-rate", str(PAIR_RATE), "--server-pid", str(server.pid), "--keep-going",
            "--max-in-flight", str(RAMP_IN_FLIGHT)]
    return flood(server, placement, args, tmp / f"ramp-{placement}.json", steps * (step + 15) + 120)


# --- report -------------------------------------------------------------------------


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}/s"


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.0f}%"


def _max_line(in_flight: str, run: dict[str, Any]) -> str:
    m = run.get("summary")
    if not m:
        return f"- {in_flight} in flight: failed: {run.get('stderr', '')[-300:]}"
    lat, others = m["latency_ms"], run["others"]
    shares = ", ".join(_pct(x) or "-" for x in m["generator_cpu_share"])
    cores = ", ".join(f"{k} {_pct(v)}" for k, v in m["cores_busy"].items())
    return (f"- {in_flight} in flight: **{m['answered_per_s']:,.0f} answered/s** "
            f"({m['attempts_per_s']:,.0f} attempts/s: {m['outcomes']}), latency p50 "
            f"{lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; generator processes "
            f"{shares} of a core; cores busy {cores}; verdict: {m['verdict']}; other "
            f"processes {others['cores']} cores.")


def _core_us(s: dict[str, Any], core: str) -> float | None:
    busy = s["cores_busy"].get(core)
    if busy is None or not s["refused"]:
        return None
    return busy * s["window_s"] / s["refused"] * 1e6


def _ramp_table(res: dict[str, Any], placement: str) -> str:
    rows = []
    for s in res["steps"]:
        pair = s["pair"] or {}
        cores, soft = s["cores_busy"], s["cores_softirq"]
        flood_ = s["flood"] or {}
        verdict = s["verdict"] if s["offered_per_s"] == 0 else (
            ("BROKEN: " + "; ".join(s["broken"])) if s["broken"] else "ok")
        rows.append([
            f"{s['offered_per_s']:,.0f}", f"{s['started_per_s']:,.0f}",
            f"{s['refused_per_s']:,.0f}", f"{100 * s['unclean_share']:.2f}%",
            "/".join(_pct(x) or "-" for x in s["generator_cpu_share"]) or "—",
            (flood_.get("generator") or {}).get("verdict", "—"),
            _pct(s["relay_cpu_share"]),
            " / ".join(f"{_pct(cores[c])} ({_pct(soft.get(c))})" for c in sorted(cores)),
            s["relay_cpu_us_per_refused"], s["relay_cpu_us_per_refused_net"],
            _core_us(s, "cpu0") if placement == "core1" else None,
            (flood_.get("latency_ms") or {}).get("p99_ms"),
            pair.get("p50_ms"), "∞" if pair.get("p99_infinite") else pair.get("p99_ms"),
            verdict])
    return h.md_table(["offered/s", "started/s", "refused/s", "unclean", "gen CPU",
                       "generator verdict", "relay CPU", "cpu0 / cpu1 busy (softirq)",
                       "relay µs/refused", "net of baseline", "cpu0 µs/refused",
                       "handshake p99 ms", "pair p50 ms", "pair p99 ms", "step"], rows)


def markdown(data: dict[str, Any]) -> str:
    lines = ["# Handshake flood: generator ceiling and breaking rate", "",
             h.machine_md(data["machine"]), "",
             f"Relay: `{' '.join(data['relay_command'])}` (every setting default: handshake "
             "limit 120/min per IP with a burst of 20, logging at info), a fresh scratch store "
             "per run. Generator: `relay flood handshake` from this tree (processes at nice "
             f"10), {SOURCES} source addresses (127.0.0.1-{SOURCES}), no token; the pair "
             f"({PAIR_RATE} round trips/s) from 127.0.0.254. Ramp steps "
             f"{data['params']['step_s']:g} s, up to {RAMP_IN_FLIGHT} in flight. Exact "
             "commands in flood_ramp.json.", "",
             "| placement | run | answered/s, 200 in flight | answered/s, 1,000 in flight | "
             "first broken step | broken from | most started/s in the ramp | "
             "other processes' CPU (cores) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for placement, runs in data["placements"].items():
        for i, run in enumerate(runs, 1):
            maxes = [(run["max"].get(str(n)) or {}).get("summary") or {} for n in MAX_IN_FLIGHT]
            res = (run["ramp"].get("report") or {}).get("results") or {}
            steps = res.get("steps") or [{}]
            top = max((s.get("started_per_s") or 0) for s in steps)
            others = [run["ramp"].get("others", {}).get("cores")] + [
                (run["max"].get(str(n)) or {}).get("others", {}).get("cores")
                for n in MAX_IN_FLIGHT]
            lines.append(
                f"| {placement} | {i} | "
                + " | ".join(f"{m.get('answered_per_s', 0):,.0f}" for m in maxes)
                + f" | {_rate(res.get('breaking_rate_per_s'))} | "
                f"{_rate(res.get('sustained_breaking_rate_per_s'))} | {top:,.0f} | "
                + " / ".join(str(o) for o in others) + " |")
    lines.append("")
    lines.append("Other processes' CPU: ramp / max 200 / max 1,000, in cores, read from /proc "
                 "around each run (see `others` in the JSON for who).")
    lines.append("")
    for placement, runs in data["placements"].items():
        spec = PLACEMENTS[placement]
        lines += [f"## `{placement}`: generator `taskset -c {spec['cpus']}`, "
                  f"--procs {spec['procs']}", ""]
        for i, run in enumerate(runs, 1):
            lines += [f"### run {i}", ""]
            quiet = run.get("quiet_before")
            if quiet:
                lines += [f"Before the run the machine was {_pct(quiet['busy_before'])} busy "
                          f"(waited {quiet['waited_s']} s for a quiet moment).", ""]
            if run.get("relay_exit_during_run") is not None:
                lines += ["**The relay exited during this run (exit "
                          f"{run['relay_exit_during_run']}): its figures are void.**", ""]
            lines += ["Closed loop, 10 s:", ""]
            lines += [_max_line(k, v) for k, v in run["max"].items()]
            lines.append("")
            ramp = run["ramp"].get("report")
            if not ramp:
                lines += [f"Ramp failed: {run['ramp'].get('stderr', '')[-300:]}", ""]
                continue
            res = ramp["results"]
            others = run["ramp"]["others"]
            lines += [f"Ramp: {res['summary']}. Other processes: {others['cores']} cores "
                      f"(top: {others['top']}).", "", _ramp_table(res, placement), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s steps, ramp 4000:12000:4000")
    parser.add_argument("--placements", default="core1,both")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ramp", default=None)
    parser.add_argument("--out", default="flood_ramp", help="results name (bench/results/NAME)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each run, wait up to S s for the machine to be <5%% busy")
    parser.add_argument("--merge", action="store_true",
                        help="add these runs to bench/results/NAME.json instead of replacing it")
    args = parser.parse_args()
    step = 3.0 if args.quick else 10.0
    ramp = args.ramp or ("4000:12000:4000" if args.quick else RAMP)
    placements = [p for p in args.placements.split(",") if p]
    data: dict[str, Any] = {
        "benchmark": "flood_ramp", "quick": args.quick, "started_at": h.now_utc(),
        "command": h.command_line(), "machine": h.machine(),
        "params": {"ramp": ramp, "step_s": step, "sources": SOURCES, "pair_rate": PAIR_RATE,
                   "max_in_flight": list(MAX_IN_FLIGHT), "ramp_in_flight": RAMP_IN_FLIGHT},
        "placements": {},
    }
    previous = h.RESULTS / f"{args.out}.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("params") != data["params"]:
            sys.exit("--merge: the existing results used other parameters")
        data["placements"] = old["placements"]
        data["started_at"] = old["started_at"]
        data["merged_commands"] = [*old.get("merged_commands", [old["command"]]),
                                   data["command"]]
        data["machines"] = [*old.get("machines", [old["machine"]]), data["machine"]]
    with tempfile.TemporaryDirectory(prefix="flood-ramp-") as tmpdir:
        tmp = Path(tmpdir)
        for placement in placements:
            runs = data["placements"].setdefault(placement, [])
            for i in range(args.runs):
                quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
                server = start_relay_dev()
                data.setdefault("relay_command", server.command)
                try:
                    one: dict[str, Any] = {"max": {}}
                    for in_flight in MAX_IN_FLIGHT:
                        one["max"][str(in_flight)] = run_max(server, placement, step,
                                                             in_flight, tmp)
                        time.sleep(2)
                    one["ramp"] = run_ramp(server, placement, ramp, step, tmp)
                    one["relay_log_tail"] = server.log_path.read_text(errors="replace")[-1500:]
                    one["relay_exit_during_run"] = server.proc.poll()
                    one["quiet_before"] = quiet
                finally:
                    server.stop()
                runs.append(one)
                maxes = {k: (v.get("summary") or {}).get("attempts_per_s")
                         for k, v in one["max"].items()}
                r = (one["ramp"].get("report") or {}).get("results", {})
                print(f"{placement} run {i + 1}: max {maxes}; ramp: {r.get('summary')}",
                      file=sys.stderr)
    data["finished_at"] = h.now_utc()
    h.write_results(args.out, data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
