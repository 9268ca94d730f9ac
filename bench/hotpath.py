"""Hot path at the engine's speed: six figures, before and after, side by side in one run.

Every figure is measured here, in one run, on this machine: the server under
test pinned to core 0 (``taskset -c 0``), the load generator — bench/gen, the
Node generator — pinned to core 1. *Before* is relay at an older commit
(default 2f38f5d), run from a git worktree under /tmp (``start_relay(tree=…)``);
*after* is this tree. The peers (bench/peers) give the ratios' denominators.

* ``ratio`` (target >= 0.5): relay msgs/s with a windowed client (50 pairs,
  4 sends in flight per sender, a new send on each ``accepted``, every
  message acked) / the trio-websocket echo peer's echoes/s (100 connections,
  4 in flight each);
* ``knee`` (>= 5,000 msgs/s): the highest open-loop offered rate with p99
  send -> delivered <= 50 ms, relay at its defaults (``store.synchronous =
  full``);
* ``cpu`` (<= 300 us): relay's CPU per message at 300 msgs/s (open loop,
  50 pairs);
* ``handshakes`` (>= 0.8): authenticated open + ready + close per second /
  the echo peer's open + close per second, 50 in flight;
* ``idle`` (<= 1.25): RSS per idle authenticated connection (heartbeats on)
  / the echo peer's, 5,000 connections from the raw-socket client;
* ``flood`` (<= 20 ms): an established pair's p99 round trip while
  ``relay flood handshake`` offers ~10,000/s from 8 source addresses (relay's
  default handshake limit: all refused 429 once each source's burst is spent).

Limits that are not the subject of a figure are lifted (``NO_LIMITS`` in
_harness.py), argon2 is made cheap (account setup only); everything else is
relay's default. Writes bench/results/hotpath.json and hotpath.md (machine,
exact commands, the machine's load at the start and the end and what else
used CPU during each figure, which side saturated, each target met or not).

    python bench/hotpath.py [--quick] [--only knee,cpu] [--before 2f38f5d] [--runs N]
                            [--keep-tree] [--flood-cpus 1] [--flood-procs 1] [--merge]

``--merge`` keeps the figures of the existing hotpath.json that this run
does not measure (same *before* commit), each marked as from that run.

``--quick`` runs everything small (one short run each, 1,000 idle
connections) in under two minutes: a smoke check of the tools, not figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import _harness as h

BEFORE = "2f38f5d"
FIGURES = ("ratio", "knee", "cpu", "handshakes", "idle", "flood")
SOURCES = ",".join(f"127.0.0.{i}" for i in range(2, 12))  # the generator's source addresses
PAIR_SOURCE = "127.0.0.200"  # the flood figure's pair: no flood source (127.0.0.1-8)
FLOOD_SOURCES = 8
FLOOD_RATE = 10_000
P99_KNEE_MS = 50.0
DELIVERED_MIN = 0.95
LATE_MAX = 0.01  # an open-loop step whose sends left late more than this is the generator's
CONTENDED = 0.10  # other processes using this share of a side's core(s): a shared machine
# The flood figure keeps relay's handshake limit; only account setup is unthrottled.
FLOOD_ENV = {"LOGIN_RATE_LIMIT_PER_MINUTE": "1000000",
             "RELAY_AUTH_REGISTRATION_RATE_PER_HOUR": "1000000"}


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    value: float
    unit: str
    what: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.value if self.op == ">=" else value <= self.value

    def gap(self, value: float | None) -> str | None:
        """How far *value* is from the target: the difference and the factor still needed."""
        if value is None or self.met(value):
            return None
        diff = value - self.value
        shown = f"{diff:+,.0f}" if abs(diff) >= 100 else f"{diff:+.3g}"
        if self.op == ">=":
            factor = f"{self.value / value:.2f}" if value > 0 else "\u221e"
            return f"{shown} {self.unit} ({TIMES}{factor} needed)"
        return f"{shown} {self.unit} ({TIMES}1/{value / self.value:.2f} needed)"


TIMES = "\u00d7"  # the unit of a ratio

TARGETS = {
    "ratio": Target(">=", 0.5, TIMES, "durable relay msgs/s (windowed) ÷ trio-websocket echoes/s"),
    "knee": Target(">=", 5000, "msgs/s", "highest open-loop rate with p99 send→delivered ≤ 50 ms"),
    "cpu": Target("<=", 300, "µs/msg", "server CPU per message at 300 msgs/s"),
    "handshakes": Target(">=", 0.8, TIMES,
                         "authenticated handshakes/s ÷ bare trio-websocket handshakes/s"),
    "idle": Target("<=", 1.25, TIMES,
                   "RSS per idle authenticated connection ÷ bare trio-websocket connection"),
    "flood": Target("<=", 20, "ms", "pair's p99 round trip under a ~10,000/s handshake flood"),
}


@dataclass(frozen=True)
class Params:
    """Sizes and durations: the full run's, or --quick's smoke-check ones."""

    quick: bool
    runs: int
    seconds: float  # measured window of a ratio / cpu / handshakes run
    warmup: float
    knee_rates: tuple[int, ...]
    knee_seconds: float
    knee_bisect: int  # extra steps between the last passing and the first failing rate
    idle_connections: int
    idle_hold: float
    flood_seconds: float
    flood_warmup: float  # the flood runs this long before the pair's window opens
    flood_cpus: str
    flood_procs: int

    @classmethod
    def make(cls, args: argparse.Namespace) -> Params:
        if args.quick:
            return cls(True, args.runs or 1, 1.5, 0.5, (1000, 2500, 5000), 1.5, 0, 1000, 2.0,
                       2.0, 1.5, args.flood_cpus, args.flood_procs)
        return cls(False, args.runs or 3, 10.0, 2.0,
                   (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000), 5.0, 2,
                   5000, 30.0, 10.0, 3.0, args.flood_cpus, args.flood_procs)


@dataclass
class Tree:
    """A relay tree under test: *before* (a worktree of an older commit) or *after* (this one)."""

    label: str
    commit: str
    path: Path | None = None  # None: this tree
    dirty: list[str] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> h.Server:
        return h.start_relay(env, tree=self.path)


# --- trees ------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=h.ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def trees(before: str, keep: bool) -> Iterator[list[Tree]]:
    """[before, after]: *before* checked out as a detached worktree under /tmp."""
    commit = git("rev-parse", before)
    path = Path(f"/tmp/relay-hotpath-before-{commit[:10]}")
    if not path.exists():
        git("worktree", "add", "--detach", str(path), commit)
    machine = h.machine()
    try:
        yield [Tree("before", commit, path),
               Tree("after", machine["git_commit"], None, machine["git_dirty_paths"])]
    finally:
        if not keep:
            git("worktree", "remove", "--force", str(path))


# --- running the generator ----------------------------------------------------------------


def timing(p: Params, seconds: float | None = None) -> list[str]:
    return ["--duration", f"{seconds or p.seconds:g}", "--warmup", f"{p.warmup:g}"]


def gen(server: h.Server, mode: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """One bench/gen run against *server* (core 1); its report."""
    return h.run_gen(h.gen_command(mode, server, *args), timeout)


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a gen report worth keeping per run (the rest is in ``report``)."""
    s, g, r = report["server"], report["generator"], report["results"]
    return {
        "server_cpu_share": s.get("cpu_share"),
        "server_runq_wait_share": s.get("runq_wait_share"),
        "server_core_others": s.get("others_on_its_cores"),
        "server_cpu_us_per_op": s.get("cpu_us_per_op"),
        "generator_cpu_share": g["cpu_share"],
        "generator_runq_wait_share": g.get("runq_wait_share"),
        "generator_core_others": g.get("others_on_its_cores"),
        "generator_loop_delay_p99_ms": max(
            (w["loop_delay"] or {}).get("p99_ms", 0) for w in g["per_process"]),
        "bound_by": report["bound_by"],
        "p50_ms": r.get("p50_ms"),
        "p99_ms": r.get("p99_ms"),
        "p99_unanswered": r.get("p99_unanswered"),
    }


def repeat(server: h.Server, runs: int, mode: str, args: list[str], value: Value
           ) -> dict[str, Any]:
    """*runs* gen runs on one server: each run's brief, value and report; the medians."""
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hotpath-gen-") as tmp:
        extra = ["--accounts-file", f"{tmp}/accounts.json"] if server.kind == "relay" else []
        for _ in range(runs):
            report = gen(server, mode, *args, *extra)
            out.append({"value": value(report), **brief(report), "report": report})
            print(f"    {server.kind}{' (echo)' if server.echo else ''} {mode}: "
                  f"{out[-1]['value']} (server {out[-1]['server_cpu_share']}, generator "
                  f"{out[-1]['generator_cpu_share']}, {out[-1]['bound_by']})", file=sys.stderr)
    return {"server": server.describe(), "runs": out, **medians(out)}


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("value", "server_cpu_share", "server_runq_wait_share", "server_core_others",
            "server_cpu_us_per_op", "generator_cpu_share", "generator_runq_wait_share",
            "generator_core_others", "p99_ms")
    med: dict[str, Any] = {k: h.median([r[k] for r in runs if r.get(k) is not None])
                           for k in keys}
    med["bound_by"] = sorted({r["bound_by"] for r in runs})
    return {"median": med}


def with_server(start: Callable[[], h.Server], body: Callable[[h.Server], dict[str, Any]]
                ) -> dict[str, Any]:
    """Start a server, run *body* on it, always stop it; errors are recorded, not raised."""
    try:
        with h.running(start()) as server:
            return body(server)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"    error: {exc!r}"[:400], file=sys.stderr)
        return {"error": repr(exc)[:2000]}


Value = Callable[[dict[str, Any]], float | None]


def echoed(report: dict[str, Any]) -> float | None:
    return float(report["results"]["echoed_per_s"])


def delivered(report: dict[str, Any]) -> float | None:
    return float(report["results"]["delivered_per_s"])


def cpu_per_message(report: dict[str, Any]) -> float | None:
    value = report["server"].get("cpu_us_per_op")
    return None if value is None else float(value)


def handshakes_per_s(report: dict[str, Any]) -> float | None:
    return float(report["results"]["handshakes_per_s"])


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def value_of(side: dict[str, Any]) -> float | None:
    return (side.get("median") or {}).get("value")


def cpu_ratio(peer: dict[str, Any], side: dict[str, Any]) -> float | None:
    """The peer's server CPU per operation ÷ relay's: the ratio both would reach if each
    were bound by its own core (robust to a core shared with other processes)."""
    return ratio((peer.get("median") or {}).get("server_cpu_us_per_op"),
                 (side.get("median") or {}).get("server_cpu_us_per_op"))


# --- the six figures -------------------------------------------------------------------


def fig_ratio(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    """Windowed relay msgs/s per tree ÷ the trio-websocket echo peer's echoes/s."""
    echo = with_server(lambda: h.start_peer("trio-websocket", echo=True), lambda s: repeat(
        s, p.runs, "echo", ["--connections", "100", "--window", "4", *timing(p)],
        echoed))
    out: dict[str, Any] = {"peer": echo}
    for tree in trees_:
        side = with_server(partial(tree.start, h.NO_LIMITS), lambda s: repeat(
            s, p.runs, "messages",
            ["--pairs", "50", "--window", "4", "--ack", "each", "--sources", SOURCES, *timing(p)],
            delivered))
        side["figure"] = ratio(value_of(side), value_of(echo))
        side["figure_by_cpu"] = cpu_ratio(echo, side)
        out[tree.label] = side
    return out


def knee_step(server: h.Server, p: Params, rate: int, accounts: str, label: str
              ) -> dict[str, Any]:
    report = gen(server, "messages", "--pairs", "50", "--rate", str(rate), "--ack", "each",
                 "--sources", SOURCES, "--accounts-file", accounts,
                 *timing(p, p.knee_seconds))
    r = report["results"]
    late = r["late_sends"] / max(1, r["sent"])
    step = {
        "offered_per_s": rate, "delivered_per_s": r["delivered_per_s"], "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"], "p99_unanswered": r["p99_unanswered"], "lost": r["lost"],
        "refused": r["refused"], "late_share": round(late, 4), **brief(report),
        "generator_late": late > LATE_MAX, "report": report,
    }
    step["passed"] = bool(
        r["p99_ms"] is not None and not r["p99_unanswered"] and r["p99_ms"] <= P99_KNEE_MS
        and r["delivered_per_s"] >= DELIVERED_MIN * rate and r["lost"] == 0
        and r["refused"] == 0)
    print(f"    knee {label} {rate}/s: delivered {r['delivered_per_s']:.0f}/s p99 {r['p99_ms']} ms "
          f"{'pass' if step['passed'] else 'FAIL'} (server {step['server_cpu_share']}, "
          f"generator {step['generator_cpu_share']}, late {late:.1%})", file=sys.stderr)
    return step


def knee_ramp(tree: Tree, p: Params) -> dict[str, Any]:
    """Ramp the offered rate until a step fails; bisect; a fresh relay after each failure."""
    steps: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []

    def run(rate: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="hotpath-knee-") as tmp, \
                h.running(tree.start(h.NO_LIMITS)) as server:
            servers.append(server.describe())
            step = knee_step(server, p, rate, f"{tmp}/accounts.json", tree.label)
        steps.append(step)
        return step

    # One relay for the passing steps: restart only after a failure (its backlog).
    with tempfile.TemporaryDirectory(prefix="hotpath-knee-") as tmp, \
            h.running(tree.start(h.NO_LIMITS)) as server:
        servers.append(server.describe())
        for rate in p.knee_rates:
            steps.append(knee_step(server, p, rate, f"{tmp}/accounts.json", tree.label))
            if not steps[-1]["passed"]:
                break
    lo = max((s["offered_per_s"] for s in steps if s["passed"]), default=0)
    hi = min((s["offered_per_s"] for s in steps if not s["passed"]), default=None)
    for _ in range(p.knee_bisect):
        if hi is None:
            break
        mid = int(round((lo + hi) / 2, -2))
        if mid in (lo, hi):
            break
        if run(mid)["passed"]:
            lo = mid
        else:
            hi = mid
    passed = [s for s in steps if s["passed"]]
    best = max(passed, key=lambda s: s["offered_per_s"]) if passed else None
    first_fail = min((s for s in steps if not s["passed"]), key=lambda s: s["offered_per_s"],
                     default=None)
    return {"server": servers[0], "servers_started": len(servers), "steps": steps,
            "median": {"value": best["offered_per_s"] if best else 0,
                       "bound_by": [first_fail["bound_by"]] if first_fail else ["(no step failed)"],
                       "server_cpu_share": first_fail and first_fail["server_cpu_share"],
                       "server_core_others": first_fail and first_fail["server_core_others"],
                       "generator_cpu_share": first_fail and first_fail["generator_cpu_share"],
                       "p99_ms": best and best["p99_ms"]},
            "knee_step": best and {k: v for k, v in best.items() if k != "report"},
            "first_failing_step": first_fail and {k: v for k, v in first_fail.items()
                                                  if k != "report"},
            "ramp_ended": "a step failed" if first_fail else "every rate passed (raise the ramp)"}


def fig_knee(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tree in trees_:
        try:
            side = knee_ramp(tree, p)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
            side = {"error": repr(exc)[:2000]}
        side["figure"] = value_of(side)
        out[tree.label] = side
    return out


def fig_cpu(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tree in trees_:
        side = with_server(partial(tree.start, h.NO_LIMITS), lambda s: repeat(
            s, p.runs, "messages",
            ["--pairs", "50", "--rate", "300", "--ack", "each", "--sources", SOURCES, *timing(p)],
            cpu_per_message))
        side["figure"] = value_of(side)
        out[tree.label] = side
    return out


def fig_handshakes(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    common = ["--concurrency", "50", "--sources", SOURCES, *timing(p)]
    bare = with_server(lambda: h.start_peer("trio-websocket", echo=True), lambda s: repeat(
        s, p.runs, "handshakes", ["--no-ready", *common],
        handshakes_per_s))
    out: dict[str, Any] = {"peer": bare}
    for tree in trees_:
        side = with_server(partial(tree.start, h.NO_LIMITS), lambda s: repeat(
            s, p.runs, "handshakes", ["--accounts", "8", *common],
            handshakes_per_s))
        side["figure"] = ratio(value_of(side), value_of(bare))
        side["figure_by_cpu"] = cpu_ratio(bare, side)
        out[tree.label] = side
    return out


def kib_per_connection(report: dict[str, Any]) -> float | None:
    s, r = report["server"], report["results"]
    if not r["survived"] or s.get("rss_at_t1_kb") is None or s.get("rss_before_setup_kb") is None:
        return None
    grown_kb = float(s["rss_at_t1_kb"] - s["rss_before_setup_kb"])
    return round(grown_kb / float(r["survived"]), 3)


def fig_idle(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    args = ["--connections", str(p.idle_connections), "--hold", f"{p.idle_hold:g}",
            "--sources", SOURCES, "--open-concurrency", "100"]
    runs = 1  # one fresh server per row: RSS does not go down again
    bare = with_server(lambda: h.start_peer("trio-websocket", echo=True), lambda s: repeat(
        s, runs, "idle", [*args, "--no-ready"], kib_per_connection))
    out: dict[str, Any] = {"peer": bare}
    for tree in trees_:
        side = with_server(partial(tree.start, h.NO_LIMITS), lambda s: repeat(
            s, runs, "idle", [*args, "--per-account", "64"], kib_per_connection))
        side["figure"] = ratio(value_of(side), value_of(bare))
        out[tree.label] = side
    return out


def flood_command(server: h.Server, p: Params, seconds: float, out: Path) -> list[str]:
    return ["taskset", "-c", p.flood_cpus, sys.executable, "-m", "relay", "flood", "handshake",
            "--ws", server.ws_url, "--rate", str(FLOOD_RATE), "--sources", str(FLOOD_SOURCES),
            "--procs", str(p.flood_procs), "--max-in-flight", "2000",
            "--duration", f"{seconds:g}", "--json", str(out), "--quiet"]


def flood_run(server: h.Server, p: Params, tmp: Path, n: int) -> dict[str, Any]:
    """The pair's round trips while ``relay flood handshake`` hits the relay."""
    ready, out = tmp / f"ready-{n}", tmp / f"flood-{n}.json"
    pair_cmd = h.gen_command("pair", server, "--rate", "50", "--sources", PAIR_SOURCE,
                             "--duration", f"{p.flood_seconds:g}",
                             "--warmup", f"{p.flood_warmup:g}", "--ready-file", str(ready),
                             "--accounts-file", str(tmp / "accounts.json"))
    pair = subprocess.Popen(pair_cmd, cwd=h.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    flood = None
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and pair.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # The pair is connected: the flood starts now, its bursts are spent in the warm-up.
        cmd = flood_command(server, p, p.flood_warmup + p.flood_seconds + 0.5, out)
        flood = subprocess.Popen(cmd, cwd=h.ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        stdout, stderr = pair.communicate(timeout=p.flood_seconds + p.flood_warmup + 120)
        flood_err = flood.communicate(timeout=60)[1]
    finally:
        for proc in (pair, flood):
            if proc is not None and proc.poll() is None:
                proc.kill()
    if pair.returncode != 0:
        raise h.GenError(f"pair exited {pair.returncode}: {stderr[-1500:]}")
    report = json.loads(stdout)
    report["bench_command"] = pair_cmd
    result = {"value": report["results"]["p99_ms"], **brief(report), "report": report,
              "flood_command": cmd}
    if out.exists():
        f = json.loads(out.read_text())
        res = f["results"]
        result["flood"] = {
            "attempts_per_s": res["attempts_per_s"], "started_per_s": res.get("started_per_s"),
            "refused_429_per_s": res["outcomes"]["429"]["per_s"],
            "outcomes": {k: v["count"] for k, v in res["outcomes"].items() if v["count"]},
            "generator": res.get("generator"), "cores_busy": res.get("cores_busy"),
            "schedule": res.get("schedule"), "client": f.get("client"),
        }
    else:
        result["flood"] = {"error": f"no JSON from the flood: {flood_err[-800:]}"}
    return result


def flood_side(tree: Tree, p: Params) -> dict[str, Any]:
    def body(server: h.Server) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="hotpath-flood-") as name:
            tmp = Path(name)
            accounts = ["--accounts-file", str(tmp / "accounts.json")]
            baseline = gen(server, "pair", "--rate", "50", "--sources", PAIR_SOURCE,
                           "--duration", f"{p.flood_seconds:g}", *accounts)
            runs = []
            for n in range(p.runs):
                runs.append(flood_run(server, p, tmp, n))
                f = runs[-1]["flood"]
                print(f"    flood {tree.label}: pair p99 {runs[-1]['value']} ms, flood "
                      f"{f.get('attempts_per_s')}/s (429 {f.get('refused_429_per_s')}/s), "
                      f"server {runs[-1]['server_cpu_share']}", file=sys.stderr)
        out = {"server": server.describe(),
               "baseline": {"value": baseline["results"]["p99_ms"], **brief(baseline),
                            "report": baseline},
               "runs": runs, **medians(runs)}
        out["median"]["flood_attempts_per_s"] = h.median(
            [r["flood"].get("attempts_per_s") for r in runs if r["flood"].get("attempts_per_s")])
        out["median"]["flood_429_per_s"] = h.median(
            [r["flood"].get("refused_429_per_s") for r in runs
             if r["flood"].get("refused_429_per_s") is not None])
        return out

    return with_server(lambda: tree.start(FLOOD_ENV), body)


def fig_flood(p: Params, trees_: list[Tree]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tree in trees_:
        side = flood_side(tree, p)
        med = side.get("median") or {}
        side["figure"] = med.get("value")
        rate = med.get("flood_attempts_per_s") or 0
        side["flood_reached"] = rate >= 0.9 * FLOOD_RATE
        out[tree.label] = side
    return out


FIGURE_FUNCS: dict[str, Callable[[Params, list[Tree]], dict[str, Any]]] = {
    "ratio": fig_ratio, "knee": fig_knee, "cpu": fig_cpu, "handshakes": fig_handshakes,
    "idle": fig_idle, "flood": fig_flood,
}


def contention(fig: dict[str, Any]) -> list[str]:
    """The sides of a figure whose server's or generator's core others used too."""
    found = []
    for label in ("peer", "before", "after"):
        side = fig.get(label) or {}
        runs = [*(side.get("runs") or side.get("steps") or [])]
        for who in ("server", "generator"):
            others = [r[f"{who}_core_others"] for r in runs
                      if r.get(f"{who}_core_others") is not None]
            if others and max(others) > CONTENDED:
                found.append(f"{label}: other processes used up to {max(others):.0%} of the "
                             f"{who}'s core")
    return found


def measure_figure(name: str, p: Params, trees_: list[Tree]) -> dict[str, Any]:
    """One figure, with the CPU every other process on the machine used meanwhile."""
    print(f"hotpath: {name}", file=sys.stderr, flush=True)
    before, started = h.process_table(), time.monotonic()
    data = FIGURE_FUNCS[name](p, trees_)
    wall = time.monotonic() - started
    data["others_cpu"] = h.others_cpu(before, h.process_table(), wall)
    data["contended"] = contention(data)
    data["wall_s"] = round(wall, 1)
    target = TARGETS[name]
    data["target"] = asdict(target)
    for label in ("before", "after"):
        side = data.get(label) or {}
        data[f"met_{label}"] = target.met(side.get("figure"))
        data[f"gap_{label}"] = target.gap(side.get("figure"))
    if name == "flood":  # a flood below ~10,000/s does not test the target
        for label in ("before", "after"):
            if not (data.get(label) or {}).get("flood_reached"):
                data[f"met_{label}"] = None if data[f"met_{label}"] else data[f"met_{label}"]
    return data


# --- the report ---------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 \
            else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def saturation(side: dict[str, Any]) -> str:
    """Who was saturated, from the medians: bound_by, then the shares behind it."""
    if not side or "error" in side:
        return f"error: {side.get('error', 'not run')[:80]}" if side else "—"
    m = side.get("median") or {}
    others = m.get("server_core_others")
    return (f"{', '.join(m.get('bound_by') or ['?'])} (server {pct(m.get('server_cpu_share'))}"
            + (f" + others {pct(others)} of its core" if others else "")
            + f", generator {pct(m.get('generator_cpu_share'))})")


def flood_saturation(side: dict[str, Any]) -> str:
    """The flood figure's sides: the flood generator's core, then the relay's."""
    if not side or "error" in side:
        return saturation(side)
    floods = [r["flood"] for r in side.get("runs", []) if "generator" in r.get("flood", {})]
    if not floods:
        return saturation(side)
    f = floods[len(floods) // 2]
    share = sum(w["cpu_share"] for w in f["generator"]["workers"])
    busy = ", ".join(f"{k} {v:.0%}" for k, v in (f.get("cores_busy") or {}).items())
    m = side.get("median") or {}
    return (f"flood generator {pct(share)} CPU ({f['generator'].get('verdict')}; cores busy: "
            f"{busy}); relay {pct(m.get('server_cpu_share'))}")


def figure_cell(name: str, side: dict[str, Any] | None) -> str:
    if not side:
        return "—"
    if "error" in side:
        return "error"
    value = side.get("figure")
    if name in ("ratio", "handshakes"):
        return (f"{fmt(value)} ({fmt(value_of(side))}; by CPU/op: "
                f"{fmt(side.get('figure_by_cpu'))})")
    if name == "idle":
        return f"{fmt(value)} ({fmt(value_of(side))} KiB)"
    if name == "knee" and not value:
        steps = side.get("steps") or []
        return f"< {fmt(steps[0]['offered_per_s'], 'msgs/s')}" if steps else "—"
    if name == "flood":
        m = side.get("median") or {}
        return (f"{fmt(value, 'ms')} at {fmt(m.get('flood_attempts_per_s'))}/s"
                + ("" if side.get("flood_reached") else " (flood < 9,000/s)"))
    return fmt(value, TARGETS[name].unit)


def met_cell(data: dict[str, Any], label: str) -> str:
    met = data.get(f"met_{label}")
    text = "met" if met else "not tested" if met is None else "**missed**"
    return f"{text} (contended)" if met is not None and data.get("contended") else text


def summary_table(data: dict[str, Any]) -> str:
    rows = []
    for name, fig in data["figures"].items():
        t = TARGETS[name]
        earlier = " (earlier run)" if fig.get("from_earlier_run") else ""
        rows.append([f"`{name}`{earlier}", f"{t.what}: {t.op} {t.value:g} {t.unit}",
                     figure_cell(name, fig.get("before")), met_cell(fig, "before"),
                     figure_cell(name, fig.get("after")), met_cell(fig, "after"),
                     fig.get("gap_after"),
                     (flood_saturation if name == "flood" else saturation)(fig.get("after") or {})])
    return h.md_table(["figure", "target", "before", "", "after", "", "gap (after)",
                       "saturated (after)"], rows)


def command_text(describe: dict[str, Any]) -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(describe.get("env", {}).items()))
    return f"(cd {describe.get('cwd')} && {env} {' '.join(describe['command'])})"


def side_rows(name: str, fig: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for label in ("peer", "before", "after"):
        side = fig.get(label)
        if not side:
            continue
        if "error" in side:
            rows.append([label, f"error: {side['error'][:120]}", *[None] * 8])
            continue
        m = side.get("median") or {}
        kind = side.get("server", {}).get("kind", "")
        rows.append([f"{label} ({kind})", fmt(m.get("value")), fmt(side.get("figure")),
                     pct(m.get("server_cpu_share")), pct(m.get("server_core_others")),
                     pct(m.get("generator_cpu_share")), pct(m.get("generator_core_others")),
                     fmt(m.get("server_cpu_us_per_op")),
                     fmt(m.get("p99_ms")), ", ".join(m.get("bound_by") or [])])
    return rows


VALUE_NAMES = {"ratio": "msgs/s or echoes/s", "knee": "knee msgs/s (offered)",
               "cpu": "server µs/msg", "handshakes": "handshakes/s",
               "idle": "KiB per connection", "flood": "pair p99 ms"}


def figure_section(name: str, fig: dict[str, Any]) -> str:
    earlier = fig.get("from_earlier_run")
    note = ([f"From an earlier run (`{' '.join(earlier['command'])}`, {earlier['started_at']}, "
             f"after = {earlier['after_commit'][:10]}; its load is in hotpath.json).", ""]
            if earlier else [])
    lines = [f"### `{name}`: {TARGETS[name].what}", "", *note,
             h.md_table(["side", VALUE_NAMES[name], "figure", "server CPU", "others on its core",
                         "generator CPU", "others on its core", "server µs/op", "p99 ms",
                         "saturated"],
                        side_rows(name, fig)), ""]
    if name == "knee":
        for label in ("before", "after"):
            steps = (fig.get(label) or {}).get("steps") or []
            rows = [[s["offered_per_s"], s["delivered_per_s"], s["p50_ms"], s["p99_ms"],
                     "pass" if s["passed"] else "FAIL", pct(s["server_cpu_share"]),
                     pct(s["generator_cpu_share"]), f"{s['late_share']:.1%}", s["bound_by"]]
                    for s in steps]
            if rows:
                lines += [f"{label}:", "", h.md_table(
                    ["offered/s", "delivered/s", "p50 ms", "p99 ms", "", "server CPU",
                     "generator CPU", "sends late", "saturated"], rows), ""]
    if name == "flood":
        for label in ("before", "after"):
            side = fig.get(label) or {}
            base = side.get("baseline")
            floods = [r["flood"] for r in side.get("runs", [])]
            if base:
                lines.append(f"- {label}: pair p99 without flood {fmt(base['value'])} ms; with "
                             f"flood (per run): " + "; ".join(
                                 f"p99 {fmt(r['value'])} ms, {fmt(f.get('attempts_per_s'))} "
                                 f"attempts/s, 429 {fmt(f.get('refused_429_per_s'))}/s, "
                                 f"outcomes {f.get('outcomes')}, flood generator "
                                 f"{(f.get('generator') or {}).get('verdict')}"
                                 for r, f in zip(side["runs"], floods, strict=True)))
        lines.append("")
    commands = []
    for label in ("peer", "before", "after"):
        side = fig.get(label) or {}
        if "server" in side:
            commands.append(f"- {label} server: `{command_text(side['server'])}`")
        first = (side.get("runs") or side.get("steps") or [{}])[0]
        report = first.get("report")
        if report:
            commands.append(f"- {label} generator: `{' '.join(report['bench_command'])}`")
        if first.get("flood_command"):
            commands.append(f"- {label} flood: `{' '.join(first['flood_command'])}`")
    return "\n".join([*lines, "Commands (first run of each side):", "", *commands, ""])


def load_section(data: dict[str, Any]) -> str:
    lines = ["## What else was running", ""]
    for when in ("start", "end"):
        s = data["load"][when]
        lines += [f"At the {when} ({s['at']}): `{s['uptime']}`; CPU pressure `{s['cpu_pressure']}`;"
                  f" all cores {s['busy_share_1s']:.0%} busy over 1 s. Busiest processes:", "",
                  "```", *s["ps_top"], "```", ""]
    rows = []
    for name, fig in data["figures"].items():
        others = fig.get("others_cpu") or {}
        top = ", ".join(f"{k} {v} s" for k, v in others.get("top", {}).items())
        rows.append([name, fig.get("wall_s"), others.get("cores"), top])
    lines += ["CPU used by every process outside this benchmark while each figure ran "
              "(cores = CPU seconds / wall seconds; 2 cores in all):", "",
              h.md_table(["figure", "wall s", "others' cores", "top others"], rows), ""]
    return "\n".join(lines)


def markdown(data: dict[str, Any]) -> str:
    trees_ = data["trees"]
    p = data["params"]
    head = [
        f"# Hot path at the engine's speed: before ({trees_['before']['commit'][:10]}) and "
        f"after ({trees_['after']['commit'][:10]})", "",
    ]
    if p["quick"]:
        head += ["**Quick run: a smoke check of the tools (short windows, one run each, "
                 f"{p['idle_connections']:,} idle connections), not figures to quote.**", ""]
    head += [
        h.machine_md(data["machine"]), "",
        f"Run: `{' '.join(data['command'])}`, {data['started_at']} → {data['finished_at']} "
        f"({data['wall_s']:.0f} s). Before = relay at {trees_['before']['commit']} from the "
        f"worktree {trees_['before']['path']}; after = this tree"
        + (f" (uncommitted: {', '.join(trees_['after']['dirty'])})" if trees_['after']['dirty']
           else "") + ". Generator: bench/gen (Node, raw-socket WebSocket client) on core 1; "
        "the flood: `relay flood handshake` (raw sockets, this tree's). Each figure's runs: "
        f"{p['runs']} {TIMES} {p['seconds']:g} s windows after {p['warmup']:g} s of warm-up, "
        "median (knee: one ramp, one step per rate; idle: one run). Saturated = the side at ≥ 90% "
        "of its core(s); \"(core shared)\" = below that only because other processes used the "
        "rest of its core (per-CPU busy time from /proc/stat less its own CPU; softirq "
        "included).", "",
        "## Targets", "", summary_table(data), "",
        "Figure cells: the ratio figures give the ratio, then relay's own value in "
        "parentheses and, for throughput ratios, the ratio of server CPU per operation "
        "(peer's ÷ relay's: what the ratio would be if both were bound by their core; it does "
        "not move when other processes take part of core 0); the flood cell gives the flood "
        "rate reached (below ~9,000/s the target is not tested). \"(contended)\": other "
        f"processes used more than {CONTENDED:.0%} of a server's or generator's core during "
        "that figure: its verdict is not to be trusted (see `contended` in hotpath.json).",
        "",
        load_section(data),
        "## Figures", "",
    ]
    body = [figure_section(name, fig) for name, fig in data["figures"].items()]
    return "\n".join(head + body)


# --- main ----------------------------------------------------------------------------------


def merge_earlier(data: dict[str, Any]) -> None:
    """Add the figures of the existing hotpath.json that this run did not measure."""
    path = h.RESULTS / "hotpath.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("trees", {}).get("before", {}).get("commit") != data["trees"]["before"]["commit"]:
        return  # another *before*: not comparable
    for name, fig in old.get("figures", {}).items():
        if name not in data["figures"]:
            fig.setdefault("from_earlier_run", {"started_at": old["started_at"],
                                                "command": old["command"],
                                                "quick": old.get("quick"),
                                                "after_commit": old["trees"]["after"]["commit"],
                                                "load": old.get("load")})
            data["figures"][name] = fig
    data["figures"] = {name: data["figures"][name] for name in FIGURES
                       if name in data["figures"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="everything small: a smoke check")
    parser.add_argument("--only", default=",".join(FIGURES), help="e.g. knee,cpu")
    parser.add_argument("--before", default=BEFORE, help=f"the *before* commit ({BEFORE})")
    parser.add_argument("--runs", type=int, default=None, help="runs per side (3; quick: 1)")
    parser.add_argument("--keep-tree", action="store_true", help="keep the before worktree")
    parser.add_argument("--merge", action="store_true",
                        help="keep the figures of the existing hotpath.json not measured now")
    parser.add_argument("--flood-cpus", default=str(h.CLIENT_CORE),
                        help="cores of the flood generator (1)")
    parser.add_argument("--flood-procs", type=int, default=1, help="flood generator processes")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    p = Params.make(args)
    h.pin_self()
    started = time.monotonic()
    data: dict[str, Any] = {"benchmark": "hotpath", "quick": p.quick, "started_at": h.now_utc(),
                            "command": h.command_line(), "machine": h.machine(),
                            "params": asdict(p), "load": {"start": h.load_snapshot()},
                            "figures": {}}
    with trees(args.before, args.keep_tree) as trees_:
        data["trees"] = {t.label: {"commit": t.commit, "path": str(t.path or h.ROOT),
                                   "dirty": t.dirty} for t in trees_}
        for name in FIGURES:
            if name in only:
                data["figures"][name] = measure_figure(name, p, trees_)
    data["load"]["end"] = h.load_snapshot()
    data["finished_at"] = h.now_utc()
    data["wall_s"] = round(time.monotonic() - started, 1)
    if args.merge:
        merge_earlier(data)
    h.write_results("hotpath", data, markdown(data))
    print(summary_table(data))


if __name__ == "__main__":
    main()
