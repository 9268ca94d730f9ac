"""What every benchmark shares: start servers, sample their CPU and RSS, record the machine.

Servers (relay or a peer from ``bench/peers``) run as subprocesses pinned to
core 0 (``taskset -c 0``); the benchmark process (the load generator) pins
itself to core 1 with :func:`pin_self`. Nothing here is collected by pytest
(``testpaths = ["tests"]``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
RESULTS = BENCH / "results"
SERVER_CORE = "0"
CLIENT_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
JWT_SECRET = "bench-secret-" + "x" * 40

PEER_KINDS = ("trio-websocket", "websockets-asyncio", "websockets-trio", "node-ws")
PEER_FILES = {
    "trio-websocket": "trio_ws_peer.py",
    "websockets-asyncio": "websockets_asyncio_peer.py",
    "websockets-trio": "websockets_trio_peer.py",
    "node-ws": "node_ws_peer.js",
}

# Relay settings for benchmarks that are not about limits: limits raised so
# they never decide a figure. argon2 is made cheap so that account setup is
# fast; it only costs at login, never on the WebSocket hot path.
CHEAP_ARGON2 = {"RELAY_AUTH_ARGON2_OPSLIMIT": "1", "RELAY_AUTH_ARGON2_MEMLIMIT": "8192"}
NO_LIMITS = {
    "WS_HANDSHAKE_RATE_LIMIT_PER_MINUTE": "10000000",
    "LOGIN_RATE_LIMIT_PER_MINUTE": "1000000",
    "RELAY_WS_SEND_RATE_PER_SECOND": "100000",
    "RELAY_WS_SEND_BURST": "100000",
    "RELAY_WS_MAX_CONNECTIONS_PER_USER": "100000",
    "RELAY_WS_SEND_RATE_PER_USER_PER_SECOND": "100000",
    "RELAY_WS_SEND_BURST_PER_USER": "100000",
    "RELAY_WS_HANDSHAKE_RATE_PER_USER_PER_MINUTE": "10000000",
    "RELAY_WS_MAX_PENDING_PER_IP": "100000",
    "RELAY_AUTH_REGISTRATION_RATE_PER_HOUR": "1000000",
    "RELAY_QUEUE_MAX_PER_SENDER": "1000000",
    "RELAY_QUEUE_MAX_PER_DEVICE": "1000000",
    "RELAY_HTTP_MAX_CONNECTIONS_PER_IP": "100000",
}


def pin_self() -> None:
    """Pin this (load generator) process to core 1, as in perf-baselines.md."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {CLIENT_CORE})


def client_cpu() -> float:
    """CPU seconds this process has used (user + system)."""
    t = os.times()
    return t.user + t.system


@dataclass
class Server:
    """A running server subprocess."""

    kind: str
    proc: subprocess.Popen[bytes]
    ws_port: int
    http_port: int | None
    command: list[str]
    env: dict[str, str]
    workdir: Path
    log_path: Path
    echo: bool = False
    tree: str | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port or 1}"

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, from /proc/<pid>/stat."""
        return proc_cpu(self.pid)

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def describe(self) -> dict[str, Any]:
        shown_env = {k: v for k, v in self.env.items() if k != "JWT_SECRET"}
        if "JWT_SECRET" in self.env:
            shown_env["JWT_SECRET"] = "<scratch secret>"
        return {
            "kind": self.kind,
            "echo": self.echo,
            "command": self.command,
            "env": shown_env,
            "cwd": str(self.workdir),
            "tree": self.tree,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp is not None:
            self._tmp.cleanup()


def proc_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait_line(proc: subprocess.Popen[bytes], log_path: Path, pattern: re.Pattern[str],
               timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        match = pattern.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {text[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not announce itself within {timeout} s: {log_path}")


LISTENING_RELAY = re.compile(r'"http_port": (\d+), "ws_port": (\d+)')
LISTENING_PEER = re.compile(r"LISTENING (\d+)")


def start_relay(extra_env: dict[str, str] | None = None, *, tree: Path | None = None,
                log_level: str = "info", cpus: str | None = SERVER_CORE) -> Server:
    """``taskset -c 0 python -m relay serve`` on a scratch store in a temp dir.

    *tree*: run relay from another checkout (a git worktree) instead of this
    one: its directory becomes the cwd and the first entry of PYTHONPATH.
    *cpus*: the ``taskset -c`` list (None: not pinned, every core).
    """
    tmp = tempfile.TemporaryDirectory(prefix="relay-bench-")
    env = {
        "JWT_SECRET": JWT_SECRET,
        "RELAY_STORE_PATH": str(Path(tmp.name) / "relay.db"),
        "RELAY_HTTP_PORT": "0",
        "RELAY_WS_PORT": "0",
        "RELAY_LOG_LEVEL": log_level,
        **CHEAP_ARGON2,
        **(extra_env or {}),
    }
    workdir = tree or ROOT
    full_env = {**os.environ, **env}
    if tree is not None:
        full_env["PYTHONPATH"] = str(tree)
    pin = ["taskset", "-c", cpus] if cpus else []
    command = [*pin, sys.executable, "-m", "relay", "serve"]
    log_path = Path(tmp.name) / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=full_env, cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT)
    match = _wait_line(proc, log_path, LISTENING_RELAY)
    server = Server("relay", proc, int(match.group(2)), int(match.group(1)), command, env,
                    workdir, log_path, tree=str(tree) if tree else None, _tmp=tmp)
    if tree is not None:
        server.env["PYTHONPATH"] = str(tree)
    return server


def start_peer(kind: str, *, echo: bool = False) -> Server:
    """``taskset -c 0`` one of bench/peers, on a free port."""
    tmp = tempfile.TemporaryDirectory(prefix="peer-bench-")
    script = PEERS / PEER_FILES[kind]
    runner = [shutil.which("node") or "node"] if script.suffix == ".js" else [sys.executable]
    command = ["taskset", "-c", SERVER_CORE, *runner, str(script)] + (["--echo"] if echo else [])
    log_path = Path(tmp.name) / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=PEERS, stdout=log, stderr=subprocess.STDOUT)
    match = _wait_line(proc, log_path, LISTENING_PEER)
    return Server(kind, proc, int(match.group(1)), None, command, {}, PEERS, log_path,
                  echo=echo, _tmp=tmp)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def start(kind: str, **kwargs: Any) -> Server:
    return start_relay(**kwargs) if kind == "relay" else start_peer(kind, **kwargs)


# --- the machine -----------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: Path = ROOT) -> str | None:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    ws_version = None
    package = PEERS / "node_modules" / "ws" / "package.json"
    if package.exists():
        ws_version = json.loads(package.read_text()).get("version")
    dirty = _run(["git", "status", "--porcelain", "relay/", "bench/"])
    return {
        "cores": os.cpu_count(),
        "mem_total_gib": round(mem_kb / 2**20, 1),
        "cpu_model": model.group(1).strip() if model else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in ("trio", "trio-websocket", "wsproto", "hypercorn", "quart-trio",
                         "msgspec", "websockets", "pynacl", "py-spy")
        },
        "node": _run(["node", "--version"]),
        "node_ws": ws_version,
        "open_files_limit": list(__import__("resource").getrlimit(
            __import__("resource").RLIMIT_NOFILE)),
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty_paths": dirty.splitlines() if dirty else [],
        "pinning": {"servers": "taskset -c 0", "load generator": "core 1 (sched_setaffinity)"},
    }


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_md(m: dict[str, Any]) -> str:
    p = m["packages"]
    return (
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, "
        f"kernel {m['kernel']}, Python {m['python']}, trio {p['trio']}, "
        f"trio-websocket {p['trio-websocket']}, wsproto {p['wsproto']}, "
        f"hypercorn {p['hypercorn']}, msgspec {p['msgspec']}, websockets {p['websockets']}, "
        f"node {m['node']}, ws {m['node_ws']}; open-file limit {m['open_files_limit']}. "
        f"Commit {m['git_commit']}"
        + (f" (uncommitted changes in: {', '.join(m['git_dirty_paths'])})"
           if m["git_dirty_paths"] else "")
        + ". Servers pinned to core 0, load generator to core 1."
    )


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def command_line() -> list[str]:
    return [Path(sys.executable).name, *sys.argv]


# --- the Node load generator (bench/gen) -------------------------------------------

GEN = BENCH / "gen" / "gen.js"


def gen_command(mode: str, server: Server, *args: str, cpus: str = str(CLIENT_CORE),
                server_pid: bool = True) -> list[str]:
    """``taskset -c <cpus> node bench/gen/gen.js MODE`` against *server* (relay or a peer)."""
    # relay: accounts over its HTTP API; a peer (echo or not): names, no auth.
    target = ["--http", server.http_url] if server.kind == "relay" else ["--peer"]
    cmd = ["taskset", "-c", cpus, shutil.which("node") or "node", str(GEN), mode,
           "--ws", server.ws_url, *target, "--json", "-", "--quiet"]
    if server_pid:
        cmd += ["--server-pid", str(server.pid)]
    return [*cmd, *args]


class GenError(RuntimeError):
    """bench/gen failed; the message ends with its stderr."""


def run_gen(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one bench/gen command; its JSON report (with the command line in ``bench_command``)."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise GenError(f"gen exited {proc.returncode}: {proc.stderr[-1500:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    report["bench_command"] = cmd
    return report


# --- what else runs on the machine -------------------------------------------------

ProcTable = dict[int, tuple[str, int, float]]


def process_table() -> ProcTable:
    """pid -> (command name, parent pid, CPU seconds), for every readable process."""
    out: ProcTable = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def descendants(table: ProcTable, roots: set[int]) -> set[int]:
    """*roots* and every process below them in *table*."""
    mine = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, (_, ppid, _) in table.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return mine


def others_cpu(before: ProcTable, after: ProcTable, wall: float,
               ours: set[int] | None = None) -> dict[str, Any]:
    """CPU that processes outside this one's tree (and *ours*) used between two tables."""
    roots = {os.getpid(), *(ours or set())}
    mine = descendants(after, roots) | descendants(before, roots)
    used: dict[str, float] = {}
    for pid, (name, _, cpu) in after.items():
        if pid in mine:
            continue
        delta = cpu - (before[pid][2] if pid in before else 0.0)
        if delta > 0.05:
            used[f"{name}[{pid}]"] = round(delta, 2)
    total = sum(used.values())
    return {"cpu_s": round(total, 2), "cores": round(total / wall, 3) if wall else None,
            "top": dict(sorted(used.items(), key=lambda kv: -kv[1])[:6])}


def load_snapshot() -> dict[str, Any]:
    """What the machine is doing now: uptime, load, CPU pressure, the busiest processes."""
    ps = _run(["ps", "-eo", "pid,psr,pcpu,etime,args", "--sort=-pcpu"])
    pressure = Path("/proc/pressure/cpu")
    return {
        "at": now_utc(),
        "uptime": _run(["uptime"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_pressure": pressure.read_text().splitlines()[0] if pressure.exists() else None,
        "busy_share_1s": round(machine_busy(1.0), 3),
        "ps_top": [line[:160] for line in (ps or "").splitlines()[:12]],
    }


def machine_busy(seconds: float) -> float:
    """The share of all cores busy over the next *seconds* (from /proc/stat)."""
    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy0, total0 = read()
    time.sleep(seconds)
    busy1, total1 = read()
    return (busy1 - busy0) / max(1, total1 - total0)
