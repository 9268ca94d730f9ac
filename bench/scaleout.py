"""Scale-out: throughput and server CPU per message for 1 and 2 relay processes (issue 12.6).

Five configurations, each on fresh engines (a new SQLite file, a new
PostgreSQL database, a Redis key prefix of its own), limits lifted
(``NO_LIMITS`` in _harness.py), argon2 cheap (account setup only), the rest
relay's defaults (``store.synchronous = full``, PostgreSQL's
``synchronous_commit`` as the server has it):

* ``embedded``: one ``relay serve``, SQLite, the bus and limits in memory
  (the reference: what one process does alone);
* ``redis-sqlite-1`` / ``redis-sqlite-2``: 1 or 2 ``relay serve`` processes,
  the bus and limits on Redis, one SQLite file shared;
* ``redis-pg-1`` / ``redis-pg-2``: the same on a PostgreSQL store.

Two processes are two independent ``relay serve`` on ports of their own
(not ``--workers 2``: each process's CPU is then its own pid's, and the
generator chooses where each connection goes). The generator (bench/gen,
raw sockets, one Node process) spreads the pairs over them with
``--ws A,B``: pair *i*'s sender on A or B in turn, and half the pairs
cross (sender on A, receiver on B or the reverse), so the bus carries half
the messages. Nothing is pinned: two relay processes need both cores, and
the generator, Redis and PostgreSQL share them (the machine has 2).

Figures per configuration:

* **saturation**: delivered msgs/s, closed loop (50 pairs, 4 sends in flight
  per sender, a new send on each ``accepted``, every message acked — the
  relay side of hotpath.py's ``ratio`` figure);
* **CPU per message** at fixed open-loop rates (300 and 1,000 msgs/s, 50
  pairs): the CPU used over the measured window, per delivered message, of
  the relay processes (each pid and its descendants, utime + stime from
  /proc), redis-server, every process named ``postgres`` (backends and
  background workers; deltas over the window), the generator — and the
  cores busy (/proc/stat), which say what bounded each figure.

The 1- and 2-process configurations of a store run side by side and their
runs are interleaved (run *i* on 1 process, then on 2, then run *i + 1*):
the goals are ratios, and this machine's speed drifts by a quarter over
minutes (its host), so measuring one side after the other would put the
drift into the ratio.

Goals (issue 12 point 6): relay µs/msg with 2 processes at most 1.15 times
that with 1 (per store, per rate); delivered msgs/s with 2 processes at least
1.5 times that with 1 (per store). Writes bench/results/scaleout.json and scaleout.md.

    python bench/scaleout.py [--quick] [--runs N] [--only embedded,redis-pg-1,...]
                             [--redis-url URL] [--pg-url URL]

``--quick``: one short run per figure, one rate (under two minutes): a smoke
check of the tools, not figures. Run it under ``flock /tmp/machine.lock``
on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _harness as h
import _pyspy

SOURCES = ",".join(f"127.0.0.{i}" for i in range(2, 12))  # the generator's source addresses
PAIRS = 50
WINDOW = 4
DELIVERED_MIN = 0.95  # an open-loop run delivering less than this share of its rate kept no pace
CPU_GOAL = 1.15  # relay µs/msg, 2 processes ÷ 1, at most
THROUGHPUT_GOAL = 1.5  # delivered msgs/s, 2 processes ÷ 1, at least
BUSY = 0.9  # a core (or the machine) at this share is saturated
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql://postgres@127.0.0.1:5432"  # a database per configuration is made here
TIMES = "\u00d7"
PYSPY_RATE = 100  # samples per second


@dataclass(frozen=True)
class Config:
    key: str
    processes: int
    redis: bool  # bus and limits on Redis (else in memory)
    store: str  # "sqlite" or "postgres"
    cross: bool = True  # with 2 processes: half the pairs cross (else none: an ablation)

    @property
    def label(self) -> str:
        bus = "Redis bus + limits" if self.redis else "memory bus + limits"
        store = "SQLite" if self.store == "sqlite" else "PostgreSQL"
        n = f"{self.processes} process{'es' if self.processes > 1 else ''}"
        crossing = "" if self.cross or self.processes == 1 else ", no pair crosses processes"
        return f"{n}, {bus}, {store}{crossing}"


CONFIGS = (
    Config("embedded", 1, False, "sqlite"),
    Config("redis-sqlite-1", 1, True, "sqlite"),
    Config("redis-sqlite-2", 2, True, "sqlite"),
    Config("redis-pg-1", 1, True, "postgres"),
    Config("redis-pg-2", 2, True, "postgres"),
    # Ablations (only with --only): both ends of every pair on one process, so the
    # bus carries nothing: what 2 processes cost without any coordination.
    Config("redis-sqlite-2-local", 2, True, "sqlite", cross=False),
    Config("redis-pg-2-local", 2, True, "postgres", cross=False),
)
DEFAULT = ("embedded", "redis-sqlite-1", "redis-sqlite-2", "redis-pg-1", "redis-pg-2")
PAIRS_OF_CONFIGS = {"sqlite": ("redis-sqlite-1", "redis-sqlite-2"),
                    "postgres": ("redis-pg-1", "redis-pg-2")}


@dataclass(frozen=True)
class Params:
    quick: bool
    runs: int
    seconds: float
    warmup: float
    rates: tuple[int, ...]
    pairs: int = PAIRS
    window: int = WINDOW

    @classmethod
    def make(cls, args: argparse.Namespace) -> Params:
        rates = tuple(int(r) for r in args.rates.split(",") if r) if args.rates else None
        if args.quick:
            return cls(True, args.runs or 1, 2.0, 0.5, rates or (1000,))
        return cls(False, args.runs or 3, 10.0, 2.0, rates or (300, 1000))


# --- engines -------------------------------------------------------------------------------


def redis_cli(url: str, *args: str) -> str:
    return subprocess.run(["redis-cli", "-u", url, *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def redis_drop(url: str, prefix: str) -> int:
    """Delete every key starting with *prefix*; how many there were."""
    # (no --count: the redis-cli of Redis 7.0 does not know it with --scan)
    keys = redis_cli(url, "--scan", "--pattern", f"{prefix}*").split()
    for i in range(0, len(keys), 500):
        redis_cli(url, "DEL", *keys[i : i + 500])
    return len(keys)


def pg_admin(url: str, statement: str) -> None:
    import psycopg  # the PostgreSQL store's own driver (installed with relay)

    with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def engines(redis_url: str, pg_url: str) -> dict[str, Any]:
    """Versions and settings of Redis and PostgreSQL (or why they cannot be used)."""
    out: dict[str, Any] = {}
    try:
        info = redis_cli(redis_url, "INFO", "server")
        version = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                        if line.startswith("redis_version:")), None)
        aof = redis_cli(redis_url, "CONFIG", "GET", "appendonly").split()
        out["redis"] = {"url": redis_url, "version": version,
                        "appendonly": aof[1] if len(aof) > 1 else None}
    except (OSError, subprocess.SubprocessError) as exc:
        out["redis"] = {"url": redis_url, "error": repr(exc)[:300]}
    try:
        import psycopg

        with psycopg.connect(f"{pg_url}/postgres") as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                        for name in ("server_version", "synchronous_commit", "fsync",
                                     "max_connections", "shared_buffers")}
        out["postgres"] = {"url": pg_url, **settings}
    except Exception as exc:  # recorded: the PostgreSQL configurations are skipped
        out["postgres"] = {"url": pg_url, "error": repr(exc)[:300]}
    return out


@dataclass
class Cluster:
    config: Config
    servers: list[h.Server]
    redis_prefix: str | None
    database: str | None
    pg_url: str = PG_URL

    @property
    def ws(self) -> str:
        return ",".join(s.ws_url for s in self.servers)


@contextlib.contextmanager
def cluster(cfg: Config, redis_url: str, pg_url: str, tree: Path = h.ROOT) -> Iterator[Cluster]:
    """*cfg*'s relay processes (from checkout *tree*) on fresh engines; all removed afterwards."""
    tmp = tempfile.TemporaryDirectory(prefix="relay-scaleout-")
    env = {**h.NO_LIMITS, "RELAY_STORE_PATH": str(Path(tmp.name) / "relay.db")}
    prefix = database = None
    servers: list[h.Server] = []
    try:
        if cfg.redis:
            prefix = f"bench-scaleout-{secrets.token_hex(4)}:"
            env |= {"RELAY_BUS_BACKEND": "redis", "RELAY_BUS_URL": redis_url,
                    "RELAY_BUS_PREFIX": prefix, "RELAY_LIMITS_BACKEND": "redis",
                    "RELAY_LIMITS_URL": redis_url, "RELAY_LIMITS_PREFIX": prefix}
        if cfg.store == "postgres":
            database = f"relay_scaleout_{secrets.token_hex(4)}"
            pg_admin(pg_url, f"CREATE DATABASE {database}")
            env |= {"RELAY_STORE_BACKEND": "postgres", "RELAY_STORE_DSN": f"{pg_url}/{database}"}
        for _ in range(cfg.processes):  # one after the other: the first migrates the store
            servers.append(h.start_relay(env, tree=tree, cpus=None))
        yield Cluster(cfg, servers, prefix, database, pg_url)
    finally:
        for server in servers:
            server.stop()
        if database:
            with contextlib.suppress(Exception):
                pg_admin(pg_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if prefix:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                redis_drop(redis_url, prefix)
        tmp.cleanup()


# --- measuring one run ---------------------------------------------------------------------


@dataclass
class Snap:
    """The machine at one instant: every process's CPU and every core's busy time."""

    at: float
    table: h.ProcTable
    cores: dict[str, tuple[int, int]]  # cpuN -> (busy jiffies, all jiffies)

    @classmethod
    def take(cls) -> Snap:
        cores = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name != "cpu":
                f = [int(x) for x in rest.split()[:8]]
                cores[name] = (sum(f) - f[3] - f[4], sum(f))
        return cls(time.time(), h.process_table(), cores)


def named(snaps: tuple[Snap, Snap], name: str) -> set[int]:
    return {pid for s in snaps for pid, row in s.table.items() if row[0] == name}


def tree_of(snaps: tuple[Snap, Snap], roots: set[int]) -> set[int]:
    return h.descendants(snaps[0].table, roots) | h.descendants(snaps[1].table, roots)


def cpu_of(snaps: tuple[Snap, Snap], pids: set[int]) -> float:
    """CPU seconds *pids* used between the two snapshots (a pid born in between: all of it)."""
    s0, s1 = snaps
    return sum(s1.table[p][2] - (s0.table[p][2] if p in s0.table else 0.0)
               for p in pids if p in s1.table)


def sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def gen_command(c: Cluster, p: Params, *args: str) -> list[str]:
    """bench/gen in messages mode over every relay of *c* (not pinned)."""
    return ["node", str(h.GEN), "messages", "--ws", c.ws, "--http", c.servers[0].http_url,
            "--json", "-", "--quiet", "--pairs", str(p.pairs), "--ack", "each",
            "--sources", SOURCES, "--duration", f"{p.seconds:g}", "--warmup", f"{p.warmup:g}",
            *([] if c.config.cross else ["--no-cross"]), *args]


def run_once(c: Cluster, p: Params, load: list[str], accounts: Path,
             profile_dir: Path | None = None) -> dict[str, Any]:
    """One gen run; the CPU of every side over its measured window, read from /proc.

    *profile_dir*: py-spy records every relay process over the window (raw
    stacks in that directory, one file per process).
    """
    spies: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="scaleout-gen-") as tmp:
        ready = Path(tmp) / "ready"
        cmd = gen_command(c, p, *load, "--accounts-file", str(accounts), "--ready-file", str(ready))
        gen = subprocess.Popen(cmd, cwd=h.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            deadline = time.monotonic() + 120
            while not (ready.exists() and ready.read_text().strip()):
                if gen.poll() is not None or time.monotonic() > deadline:
                    if gen.poll() is None:
                        gen.kill()
                    _, err = gen.communicate()
                    raise h.GenError(f"gen never started its load: {err[-1500:]}")
                time.sleep(0.01)
            go = float(ready.read_text()) / 1000
            t0, t1 = go + p.warmup, go + p.warmup + p.seconds
            sleep_until(t0)
            s0 = Snap.take()
            if profile_dir is not None:
                spies = [subprocess.Popen(pyspy_command(s, p, profile_dir / f"relay{i + 1}.txt"),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for i, s in enumerate(c.servers)]
            pg0 = pg_stats(c)
            waits: dict[str, int] = {}
            while c.database and time.time() < t1 - 0.5:  # what its backends are doing
                time.sleep(0.5)
                for state in pg_activity(c):
                    waits[state] = waits.get(state, 0) + 1
            sleep_until(t1)
            s1 = Snap.take()
            pg1 = pg_stats(c)
            out, err = gen.communicate(timeout=120)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait()
            for spy in spies:
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
    if gen.returncode != 0:
        raise h.GenError(f"gen exited {gen.returncode}: {err[-1500:]}")
    report: dict[str, Any] = json.loads(out)
    report["bench_command"] = cmd
    run = figures(c, (s0, s1), report, gen.pid)
    if pg0 and pg1:
        commits = pg1["xact_commit"] - pg0["xact_commit"]
        run["postgres_stats"] = {
            "xact_commit": commits, "xact_rollback": pg1["xact_rollback"] - pg0["xact_rollback"],
            "messages_per_commit": round(run["delivered"] / commits, 2) if commits else None,
            "backend_states": dict(sorted(waits.items(), key=lambda kv: -kv[1])),
        }
    return run


def pg_stats(c: Cluster) -> dict[str, int] | None:
    """The configuration's database's transaction counters (pg_stat_database)."""
    if not c.database:
        return None
    import psycopg

    with psycopg.connect(f"{c.pg_url}/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database"
                           " WHERE datname = %s", (c.database,)).fetchone()
    return {"xact_commit": int(row[0]), "xact_rollback": int(row[1])} if row else None


def pg_activity(c: Cluster) -> list[str]:
    """``state/wait_event`` of every backend on the configuration's database, now."""
    import psycopg

    with psycopg.connect(f"{c.pg_url}/postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                            " WHERE datname = %s AND pid <> pg_backend_pid()",
                            (c.database,)).fetchall()
    return [f"{r[0]}/{r[1] or '-'}:{r[2] or '-'}" for r in rows]


def pyspy_command(server: h.Server, p: Params, out: Path) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return [spy, "record", "-p", str(server.pid), "-d", f"{max(1, int(p.seconds))}", "-r",
            str(PYSPY_RATE), "-f", "raw", "-o", str(out), "--nonblocking"]


def profile(c: Cluster, p: Params, accounts: Path) -> dict[str, Any]:
    """One more saturation run with py-spy on every relay process: where their time goes."""
    with tempfile.TemporaryDirectory(prefix="scaleout-spy-") as tmp:
        run = run_once(c, p, ["--window", str(p.window)], accounts, Path(tmp))
        per_process = []
        for i in range(len(c.servers)):
            raw = Path(tmp) / f"relay{i + 1}.txt"
            prof = _pyspy.summarize(raw) if raw.exists() else {"samples": 0}
            per_process.append({"samples": prof["samples"],
                                "inclusive": prof.get("inclusive", [])[:40],
                                "self": prof.get("self", [])[:25]})
    print(f"    {c.config.key} profiled run: {run['delivered_per_s']:.0f} msgs/s, relay "
          f"{run['us_per_msg']['relay']} µs/msg (py-spy attached)", file=sys.stderr)
    run.pop("report")
    return {"run": run, "py_spy": per_process, "py_spy_rate_hz": PYSPY_RATE,
            "command": pyspy_command(c.servers[0], p, Path("OUT"))}


def figures(c: Cluster, snaps: tuple[Snap, Snap], report: dict[str, Any], gen_pid: int
            ) -> dict[str, Any]:
    s0, s1 = snaps
    wall = s1.at - s0.at
    relays = [tree_of(snaps, {s.pid}) for s in c.servers]
    gen = tree_of(snaps, {gen_pid})
    cpu = {
        "relay": sum(cpu_of(snaps, pids) for pids in relays),
        "redis": cpu_of(snaps, named(snaps, "redis-server")),
        "postgres": cpu_of(snaps, named(snaps, "postgres")),
        "generator": cpu_of(snaps, gen),
    }
    cores_busy = {name: (s1.cores[name][0] - s0.cores[name][0])
                  / max(1, s1.cores[name][1] - s0.cores[name][1]) for name in s1.cores}
    busy = sum(cores_busy.values())
    cores = {k: v / wall for k, v in cpu.items()}
    cores["other"] = max(0.0, busy - sum(cores.values()))
    per_relay = [cpu_of(snaps, pids) / wall for pids in relays]
    r = report["results"]
    count = r["count"]
    us = {k: (1e6 * v / count if count else None) for k, v in cpu.items()}
    us["server"] = (us["relay"] + us["redis"] + us["postgres"]) if count else None
    ours = set().union(*relays, gen)
    outside = h.others_cpu(s0.table, s1.table, wall, ours)
    return {
        "delivered_per_s": r["delivered_per_s"], "sent_per_s": r["sent_per_s"],
        "offered_per_s": r["offered_per_s"], "delivered": count,
        "p50_ms": r.get("p50_ms"), "p99_ms": r.get("p99_ms"),
        "p99_unanswered": r.get("p99_unanswered"), "lost": r["lost"], "refused": r["refused"],
        "late_sends": r["late_sends"], "crossing_pairs": sum(
            s.get("crossing_pairs", 0) for s in report["setup"]),
        "window_s": round(wall, 3),
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cores": {k: round(v, 3) for k, v in cores.items()},
        "relay_cores_per_process": [round(x, 3) for x in per_relay],
        "us_per_msg": {k: None if v is None else round(v, 1) for k, v in us.items()},
        "cores_busy": {k: round(v, 3) for k, v in cores_busy.items()},
        "busy_cores": round(busy, 3),
        "bound_by": verdict(busy, len(cores_busy), per_relay, cores["generator"], cores),
        "generator_report_cpu_share": report["generator"]["cpu_share"],
        "generator_loop_delay_p99_ms": max(
            (w["loop_delay"] or {}).get("p99_ms", 0) for w in report["generator"]["per_process"]),
        "outside_processes": outside,  # relay's engines are among them (not in our tree)
        "report": report,
    }


def verdict(busy: float, ncores: int, per_relay: list[float], gen: float,
            cores: dict[str, float]) -> str:
    """Which resource bounded a run: the machine's cores, one relay's core, the generator's."""
    split = ", ".join(f"{k} {v:.2f}" for k, v in cores.items() if v >= 0.005)
    if busy >= BUSY * ncores:
        return f"all cores ({busy:.2f} of {ncores} busy: {split})"
    full = [i for i, share in enumerate(per_relay) if share >= BUSY]
    if full:
        which = "its relay process's core" if len(per_relay) == 1 else (
            f"relay process {', '.join(str(i + 1) for i in full)}'s core")
        return f"{which} ({', '.join(f'{x:.2f}' for x in per_relay)}; {busy:.2f} of {ncores} busy)"
    if gen >= BUSY:
        return f"the generator's core ({gen:.2f})"
    return f"no CPU ({busy:.2f} of {ncores} busy: latency — the window, commits; {split})"


# --- per configuration ---------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise medians of the runs' numbers (one level of dicts deep), their verdicts."""
    out: dict[str, Any] = {}
    for key in ("delivered_per_s", "sent_per_s", "p50_ms", "p99_ms", "busy_cores", "lost",
                "refused", "late_sends", "delivered"):
        out[key] = h.median([r[key] for r in runs if r.get(key) is not None])
    for key in ("cpu_s", "cores", "us_per_msg", "cores_busy"):
        names = runs[0][key].keys()
        out[key] = {n: h.median([r[key][n] for r in runs if r[key].get(n) is not None])
                    for n in names}
    out["relay_cores_per_process"] = [
        h.median([r["relay_cores_per_process"][i] for r in runs])
        for i in range(len(runs[0]["relay_cores_per_process"]))]
    out["bound_by"] = [r["bound_by"] for r in runs]
    stats = [r["postgres_stats"] for r in runs if r.get("postgres_stats")]
    if stats:
        out["postgres_messages_per_commit"] = h.median(
            [x["messages_per_commit"] for x in stats if x["messages_per_commit"]])
    return out


def report_run(key: str, what: str, i: int, run: dict[str, Any]) -> None:
    print(f"    {key} {what} #{i + 1}: {run['delivered_per_s']:.0f} msgs/s, relay "
          f"{run['us_per_msg']['relay']} µs/msg, server {run['us_per_msg']['server']} µs/msg, "
          f"p99 {run['p99_ms']} ms; {run['bound_by']}", file=sys.stderr)


def groups(only: list[str]) -> list[list[Config]]:
    """The chosen configurations, those of one store on Redis together (their runs interleaved)."""
    out: dict[tuple[str, bool], list[Config]] = {}
    for cfg in CONFIGS:
        if cfg.key in only:
            out.setdefault((cfg.store, cfg.redis), []).append(cfg)
    return list(out.values())


def measure_group(cfgs: list[Config], p: Params, args: argparse.Namespace,
                  engines_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every configuration of *cfgs* running at once, their runs interleaved.

    Run *i* of each load is taken on each configuration in turn (1 process,
    then 2, then the next run), so that a slow spell of the machine (its
    host) weighs on both sides of a ratio alike instead of on whichever was
    measured during it. The idle cluster costs nothing meanwhile.
    """
    outs: dict[str, dict[str, Any]] = {}
    live: list[Config] = []
    for cfg in cfgs:
        out: dict[str, Any] = {"label": cfg.label, **asdict(cfg)}
        needs = (("redis", cfg.redis), ("postgres", cfg.store == "postgres"))
        missing = [name for name, needed in needs if needed and "error" in engines_[name]]
        if missing:
            out["error"] = f"skipped: {', '.join(missing)} unavailable"
        else:
            live.append(cfg)
        outs[cfg.key] = out
    started = time.monotonic()
    print(f"  {' + '.join(c.key for c in live)}", file=sys.stderr)
    try:
        with contextlib.ExitStack() as stack:
            clusters = {cfg.key: stack.enter_context(
                cluster(cfg, args.redis_url, args.pg_url, Path(args.tree))) for cfg in live}
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="scaleout-acc-"))
            accounts = {key: Path(tmp) / f"{key}.json" for key in clusters}
            for key, c in clusters.items():
                outs[key].update(servers=[s.describe() for s in c.servers],
                                 redis_prefix=c.redis_prefix, database=c.database, rates={})
            # The light loads first: no backlog from a saturated run.
            loads = [(str(rate), f"{rate}/s", ["--rate", str(rate)]) for rate in p.rates]
            loads.append(("saturation", f"window {p.window}", ["--window", str(p.window)]))
            for name, what, load in loads:
                runs: dict[str, list[dict[str, Any]]] = {key: [] for key in clusters}
                for i in range(p.runs):
                    for key, c in clusters.items():
                        run = run_once(c, p, load, accounts[key])
                        runs[key].append(run)
                        report_run(key, what, i, run)
                for key in clusters:
                    series = {"load": load, "runs": runs[key], "median": median_of(runs[key])}
                    if name == "saturation":
                        outs[key]["saturation"] = series
                    else:
                        outs[key]["rates"][name] = series
            for key, c in clusters.items():
                if key in args.profile.split(","):
                    outs[key]["profile"] = profile(c, p, accounts[key])
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"    error: {exc!r}"[:400], file=sys.stderr)
        for key in (c.key for c in live):
            outs[key]["error"] = repr(exc)[:2000]
    for out in outs.values():
        out["wall_s"] = round(time.monotonic() - started, 1)
    return outs


# --- goals ---------------------------------------------------------------------------------


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    cfgs = data["configs"]
    for store, (one, two) in PAIRS_OF_CONFIGS.items():
        a, b = cfgs.get(one) or {}, cfgs.get(two) or {}
        for rate in data["params"]["rates"]:
            ra = ((a.get("rates") or {}).get(str(rate)) or {}).get("median")
            rb = ((b.get("rates") or {}).get(str(rate)) or {}).get("median")
            x = ra and ra["us_per_msg"]["relay"]
            y = rb and rb["us_per_msg"]["relay"]
            ratio = round(y / x, 3) if x and y else None
            kept = bool(ra and rb and min(ra["delivered_per_s"], rb["delivered_per_s"])
                        >= DELIVERED_MIN * rate)
            out.append({"store": store, "goal": "cpu", "rate": rate,
                        "what": f"relay µs/msg at {rate} msgs/s, 2 processes ÷ 1",
                        "one": x, "two": y, "ratio": ratio, "target": f"≤ {CPU_GOAL}",
                        "met": None if ratio is None else ratio <= CPU_GOAL,
                        "rate_kept": kept})
        sa = (a.get("saturation") or {}).get("median")
        sb = (b.get("saturation") or {}).get("median")
        x = sa and sa["delivered_per_s"]
        y = sb and sb["delivered_per_s"]
        ratio = round(y / x, 3) if x and y else None
        out.append({"store": store, "goal": "throughput",
                    "what": "delivered msgs/s at saturation, 2 processes ÷ 1",
                    "one": x, "two": y, "ratio": ratio, "target": f"≥ {THROUGHPUT_GOAL}",
                    "met": None if ratio is None else ratio >= THROUGHPUT_GOAL,
                    "bound_one": sa and sa["bound_by"], "bound_two": sb and sb["bound_by"]})
    return out


# --- the report ----------------------------------------------------------------------------


def f0(v: Any) -> Any:
    return None if v is None else round(v)


def saturation_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, cfg in data["configs"].items():
        m = (cfg.get("saturation") or {}).get("median")
        if not m:
            rows.append([f"`{key}`", cfg.get("error", "—")[:120], *[None] * 10])
            continue
        us, cores = m["us_per_msg"], m["cores"]
        rows.append([f"`{key}`", f0(m["delivered_per_s"]), f0(us["relay"]), f0(us["redis"]),
                     f0(us["postgres"]), f0(us["server"]), f0(us["generator"]),
                     " + ".join(f"{x:.2f}" for x in m["relay_cores_per_process"]),
                     f"{cores['redis']:.2f} / {cores['postgres']:.2f}",
                     f"{cores['generator']:.2f}",
                     f"{m['busy_cores']:.2f}", m["p99_ms"]])
    return rows


def rate_rows(data: dict[str, Any], rate: int) -> list[list[Any]]:
    rows = []
    for key, cfg in data["configs"].items():
        m = (((cfg.get("rates") or {}).get(str(rate))) or {}).get("median")
        if not m:
            continue
        us = m["us_per_msg"]
        rows.append([f"`{key}`", f0(m["delivered_per_s"]), f0(us["relay"]), f0(us["redis"]),
                     f0(us["postgres"]), f0(us["server"]), f0(us["generator"]),
                     f"{m['busy_cores']:.2f}", m["p50_ms"], m["p99_ms"]])
    return rows


def goal_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for g in data["goals"]:
        met = {True: "met", False: "**missed**", None: "—"}[g["met"]]
        if g["goal"] == "cpu" and not g.get("rate_kept"):
            met += " (rate not kept)"
        one, two = g["one"], g["two"]
        rows.append([g["store"], g["what"], f0(one), f0(two),
                     None if g["ratio"] is None else f"{g['ratio']:.2f}", g["target"], met])
    return rows


def bound_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for key, cfg in data["configs"].items():
        sat = (cfg.get("saturation") or {}).get("median")
        if sat:
            lines.append(f"- `{key}` saturation: " + "; ".join(dict.fromkeys(sat["bound_by"])))
        for rate, series_ in (cfg.get("rates") or {}).items():
            m = series_["median"]
            kept = m["delivered_per_s"] >= DELIVERED_MIN * int(rate)
            lines.append(f"- `{key}` at {rate}/s: offered rate "
                         + ("kept" if kept else f"**not kept** ({m['delivered_per_s']:.0f}/s)")
                         + f"; cores busy {m['busy_cores']:.2f} of {data['machine']['cores']}")
    return lines


def us_per_msg(samples: int, run: dict[str, Any], hz: int) -> float | None:
    """py-spy samples of a function as µs per delivered message (a sample = 1/hz s)."""
    return round(samples * 1e6 / hz / run["delivered"], 1) if run.get("delivered") else None


def profile_compare(data: dict[str, Any], top: int = 30) -> list[str]:
    """Inclusive µs/msg of the busiest functions, every profiled configuration side by side
    (relay processes summed): what grows from one configuration to the next."""
    profiled = {k: c["profile"] for k, c in data["configs"].items() if c.get("profile")}
    if len(profiled) < 2:
        return []
    per: dict[str, dict[str, float | None]] = {}
    for key, prof in profiled.items():
        counts: dict[str, int] = {}
        for proc in prof["py_spy"]:
            for name, n, _ in proc["inclusive"]:
                counts[name] = counts.get(name, 0) + n
        for name, n in counts.items():
            per.setdefault(name, {})[key] = us_per_msg(n, prof["run"], prof["py_spy_rate_hz"])
    first = next(iter(profiled))
    order = sorted(per, key=lambda name: -max(v or 0 for v in per[name].values()))
    rows = [[name, *(per[name].get(k) for k in profiled)] for name in order[:top]]
    return [f"## Profiles compared: inclusive µs per delivered message (py-spy samples {TIMES} "
            f"{1e6 / profiled[first]['py_spy_rate_hz']:g} µs ÷ messages delivered in the "
            "profiled window; every relay process summed; threads sampled when not idle, so "
            "a thread waiting for the GIL counts too; a blank: not in that profile's top 40)",
            "", h.md_table(["function", *(f"`{k}`" for k in profiled)], rows), ""]


def profile_lines(data: dict[str, Any], top: int = 15) -> list[str]:
    lines: list[str] = profile_compare(data)
    for key, cfg in data["configs"].items():
        prof = cfg.get("profile")
        if not prof:
            continue
        run = prof["run"]
        lines += [f"## Profile: `{key}` (one more saturation run, py-spy on each relay process)",
                  "", f"With py-spy attached ({prof['py_spy_rate_hz']} Hz, `--nonblocking`): "
                  f"{run['delivered_per_s']:.0f} msgs/s, relay {f0(run['us_per_msg']['relay'])} "
                  "µs/msg. Share of the process's samples (threads not idle), relay process 1:", ""]
        first = prof["py_spy"][0]
        hz = prof["py_spy_rate_hz"]
        incl = [[name, f"{share:.1f}%", us_per_msg(n, run, hz) if len(prof["py_spy"]) == 1
                 else None] for name, n, share in first["inclusive"][:top]]
        own = [[name, f"{share:.1f}%"] for name, _, share in first["self"][:top]]
        lines += [f"{first['samples']} samples. Inclusive:", "",
                  h.md_table(["function", "inclusive", "µs/msg"], incl), "", "Self:", "",
                  h.md_table(["function", "self"], own), ""]
    return lines


def commands(data: dict[str, Any]) -> list[str]:
    out = []
    for key, cfg in data["configs"].items():
        for i, s in enumerate(cfg.get("servers") or []):
            env = " ".join(f"{k}={v}" for k, v in sorted(s["env"].items()))
            out.append(f"- `{key}` relay {i + 1}: `(cd {s['cwd']} && {env} "
                       f"{' '.join(s['command'])})`")
        sat = cfg.get("saturation") or {}
        if sat.get("runs"):
            out.append(f"- `{key}` generator (saturation): "
                       f"`{' '.join(sat['runs'][0]['report']['bench_command'])}`")
    return out


def markdown(data: dict[str, Any]) -> str:
    p = data["params"]
    e = data["engines"]
    lines = ["# Scale-out: 1 and 2 relay processes on Redis, SQLite and PostgreSQL", ""]
    if p["quick"]:
        lines += ["**Quick run: a smoke check of the tools (short windows, one run each), not "
                  "figures to quote.**", ""]
    redis = e["redis"]
    pg = e["postgres"]
    lines += [
        h.machine_md(data["machine"]).replace(
            "Servers pinned to core 0, load generator to core 1.",
            "Nothing pinned: relay processes, Redis, PostgreSQL and the generator share both "
            "cores."), "",
        f"Engines: Redis {redis.get('version') or redis.get('error')} (appendonly "
        f"{redis.get('appendonly')}); PostgreSQL {pg.get('server_version') or pg.get('error')} "
        f"(synchronous_commit {pg.get('synchronous_commit')}, fsync {pg.get('fsync')}, "
        f"shared_buffers {pg.get('shared_buffers')}). relay at its defaults but for the limits "
        "(lifted) and argon2 (cheap): SQLite `store.synchronous = full`, PostgreSQL "
        "`store.pool_size = 10` per process. Fresh SQLite file, PostgreSQL database and Redis "
        "key prefix per configuration.", "",
        f"Run: `{' '.join(data['command'])}`, {data['started_at']} → {data['finished_at']} "
        f"({data['wall_s']:.0f} s). Generator: bench/gen (Node, raw sockets), one process, "
        f"{p['pairs']} pairs from 10 source addresses, every message acked; with 2 relay "
        "processes `--ws A,B`: senders alternate between them and half the pairs cross "
        f"(the bus carries their messages). Each figure: median of {p['runs']} "
        f"{TIMES} {p['seconds']:g} s windows after {p['warmup']:g} s of warm-up. CPU from "
        "/proc over each window: relay = its processes (and their descendants), redis = "
        "redis-server, postgres = every `postgres` process (backends, WAL writer, "
        "checkpointer…), generator = the Node process; cores busy from /proc/stat (all "
        "CPU time, kernel and softirq included).", "",
        "## Goals", "",
        h.md_table(["store", "goal", "1 process", "2 processes", "ratio", "target", ""],
                   goal_rows(data)), "",
        "## Saturation (closed loop: "
        f"{p['pairs']} pairs, {p['window']} sends in flight per sender)", "",
        h.md_table(["config", "msgs/s", "relay µs/msg", "redis µs/msg", "postgres µs/msg",
                    "server µs/msg", "generator µs/msg", "relay cores", "redis / postgres cores",
                    "generator cores", "cores busy", "p99 ms"], saturation_rows(data)), "",
    ]
    for rate in p["rates"]:
        lines += [f"## CPU per message at {rate:,} msgs/s (open loop, {p['pairs']} pairs)", "",
                  h.md_table(["config", "delivered/s", "relay µs/msg", "redis µs/msg",
                              "postgres µs/msg", "server µs/msg", "generator µs/msg",
                              "cores busy", "p50 ms", "p99 ms"], rate_rows(data, rate)), ""]
    lines += ["## What bounded each figure", "", *bound_lines(data), "",
              "server µs/msg = relay + redis + postgres. Configurations: " + "; ".join(
                  f"`{k}` = {c['label']}" for k, c in data["configs"].items()) + ".", ""]
    for when in ("start", "end"):
        s = data["load"][when]
        lines += [f"Machine at the {when} ({s['at']}): `{s['uptime']}`; all cores "
                  f"{s['busy_share_1s']:.0%} busy over 1 s.", ""]
    lines += profile_lines(data)
    lines += ["## Commands", "", *commands(data), ""]
    return "\n".join(lines)


def summary(data: dict[str, Any]) -> str:
    return h.md_table(["store", "goal", "1 process", "2 processes", "ratio", "target", ""],
                      goal_rows(data))


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short run each: a smoke check")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (3; quick: 1)")
    parser.add_argument("--rates", default=None,
                        help="open-loop rates, comma-separated (300,1000; quick: 1000)")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help="configurations, e.g. redis-pg-1,redis-pg-2 (also the ablations "
                             "redis-sqlite-2-local, redis-pg-2-local)")
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis ({REDIS_URL})")
    parser.add_argument("--pg-url", default=PG_URL,
                        help=f"PostgreSQL server, no database ({PG_URL})")
    parser.add_argument("--name", default="scaleout", help="results file name (scaleout)")
    parser.add_argument("--tree", default=str(h.ROOT),
                        help="run relay from this checkout (a git worktree: an A/B of two trees)")
    parser.add_argument("--rewrite", action="store_true",
                        help="measure nothing: rewrite results/NAME.md from results/NAME.json")
    parser.add_argument("--profile", default="",
                        help="configurations to profile: one more saturation run each, "
                             "py-spy on every relay process")
    args = parser.parse_args()
    only = [k for k in args.only.split(",") if k]
    unknown = set(only) - {c.key for c in CONFIGS}
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if args.rewrite:
        data = json.loads((h.RESULTS / f"{args.name}.json").read_text())
        data["goals"] = goals(data)
        h.write_results(args.name, data, markdown(data))
        print(summary(data))
        return
    p = Params.make(args)
    started = time.monotonic()
    machine = h.machine()
    machine["pinning"] = {"servers": "none", "load generator": "none",
                          "engines": "Redis and PostgreSQL as the system runs them"}
    data: dict[str, Any] = {"benchmark": "scaleout", "quick": p.quick, "started_at": h.now_utc(),
                            "command": h.command_line(), "machine": machine, "params": asdict(p),
                            "load": {"start": h.load_snapshot()},
                            "engines": engines(args.redis_url, args.pg_url), "configs": {}}
    print(f"scaleout: {len(only)} configuration(s), pid {os.getpid()}", file=sys.stderr)
    for group in groups(only):
        data["configs"] |= measure_group(group, p, args, data["engines"])
    data["goals"] = goals(data)
    data["load"]["end"] = h.load_snapshot()
    data["finished_at"] = h.now_utc()
    data["wall_s"] = round(time.monotonic() - started, 1)
    h.write_results(args.name, data, markdown(data))
    print(summary(data))


if __name__ == "__main__":
    main()
