"""``relay serve --workers N``: N relay processes on the same ports, supervised.

The supervisor serves nothing itself. It starts N ``relay serve`` children
with ``SO_REUSEPORT`` (the kernel spreads new connections across them) and
the same configuration; they share the store, the bus and the limits
(Redis), so they behave as one relay. A child that exits unexpectedly is
restarted after a short, growing pause and the event is logged; one that
keeps dying at once (a port in use, a bad database) makes the supervisor
give up. SIGTERM or SIGINT is passed to every child, each drains as a single
relay does (close 1001, flush the pipeline), and the supervisor exits once
all have: 0 if every child stopped cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from ..config import Config
from ..obs import Logger, get_logger

RESTART_PAUSE = 0.5  # seconds before the first restart of a worker; doubles up to ...
MAX_PAUSE = 30.0
STABLE_AFTER = 30.0  # ... and resets once a worker has run this long
GIVE_UP_AFTER = 5  # restarts in a row, each dying before STABLE_AFTER
STOP_GRACE = 60.0  # seconds the children get to drain after SIGTERM
ORPHAN_CHECK = 1.0  # seconds between a worker's looks at its parent


def why_not_workers(config: Config, workers: int) -> str | None:
    """One line saying why *workers* processes cannot share this configuration, or None."""
    if workers <= 1:
        return None
    local = []
    if config.bus.backend == "local":
        local.append('[bus] backend = "redis"')
    if config.limits.backend == "memory":
        local.append('[limits] backend = "redis"')
    if not local:
        return None
    return (
        f"--workers {workers} needs {' and '.join(local)}: with the in-process bus and limits, "
        "workers would not see each other's connections, revocations or rate limits"
    )


@dataclass
class _Worker:
    index: int
    process: trio.Process | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    pause: float = RESTART_PAUSE
    exit_codes: list[int] = field(default_factory=list)


def supervise(config_path: str | None, env: Mapping[str, str], workers: int) -> int:
    """Run *workers* children until a signal; the exit code (0: all stopped cleanly)."""
    return trio.run(_supervise, config_path, dict(env), workers)


async def _supervise(config_path: str | None, env: dict[str, str], workers: int) -> int:
    log = get_logger("relay.supervisor")
    stopping = trio.Event()
    failed: list[str] = []
    pool = [_Worker(i) for i in range(workers)]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("relay.shutdown", signal=signal.Signals(signum).name, workers=workers)
                    stopping.set()
                    return

            async def stop_children() -> None:
                await stopping.wait()
                for worker in pool:
                    _signal(worker, signal.SIGTERM)
                await trio.sleep(STOP_GRACE)  # each drains as one relay does, then ...
                for worker in pool:
                    _signal(worker, signal.SIGKILL)  # ... past the grace, no more waiting

            nursery.start_soon(watch_signals)
            nursery.start_soon(stop_children)
            async with trio.open_nursery() as keepers:
                for worker in pool:
                    keepers.start_soon(_keep, worker, config_path, env, stopping, failed, log)
            nursery.cancel_scope.cancel()
    if failed:
        print(f"relay: {failed[0]}", file=sys.stderr)
        return 1
    # -SIGTERM: a worker still starting when the stop came (before it listened,
    # so nothing to drain) took the signal's default action.
    clean = all(w.exit_codes and w.exit_codes[-1] in (0, -signal.SIGTERM) for w in pool)
    log.info("relay.stopped", workers=workers, clean=clean)
    return 0 if clean else 1


async def _keep(
    worker: _Worker,
    config_path: str | None,
    env: dict[str, str],
    stopping: trio.Event,
    failed: list[str],
    log: Logger,
) -> None:
    """Run one worker, restarting it when it dies, until the supervisor stops."""
    command = [sys.executable, "-m", "relay", "serve"]
    if config_path:
        command += ["--config", config_path]
    child_env = {
        **env,
        "RELAY_SERVER_WORKERS": "1",  # a child serves; it does not supervise
        "RELAY_SERVER_REUSE_PORT": "true",
        "RELAY_WORKER_INDEX": str(worker.index),
        "RELAY_SUPERVISOR_PID": str(os.getpid()),
    }
    while not stopping.is_set():
        worker.started_at = trio.current_time()
        worker.process = await trio.lowlevel.open_process(command, env=child_env)
        log.info("relay.worker_started", worker=worker.index, pid=worker.process.pid)
        with trio.CancelScope(shield=True):  # never orphan a child: wait for its exit
            code = await worker.process.wait()
        worker.exit_codes.append(code)
        if stopping.is_set():
            return
        ran = trio.current_time() - worker.started_at
        worker.quick_deaths = 0 if ran >= STABLE_AFTER else worker.quick_deaths + 1
        worker.pause = RESTART_PAUSE if ran >= STABLE_AFTER else min(worker.pause * 2, MAX_PAUSE)
        log.error(
            "relay.worker_exited",
            worker=worker.index,
            code=code,
            ran_s=round(ran, 1),
            restart_in_s=worker.pause,
        )
        if worker.quick_deaths >= GIVE_UP_AFTER:
            failed.append(
                f"worker {worker.index} exited {GIVE_UP_AFTER} times in a row within "
                f"{STABLE_AFTER:g} s of starting (last code {code}); see its log lines"
            )
            stopping.set()
            return
        with trio.move_on_after(worker.pause):
            await stopping.wait()


def _signal(worker: _Worker, signum: int) -> None:
    if worker.process is not None and worker.process.returncode is None:
        worker.process.send_signal(signum)


def worker_index() -> int | None:
    """This process's worker number when a supervisor started it, else None."""
    value = os.environ.get("RELAY_WORKER_INDEX")
    return int(value) if value and value.isdigit() else None


def supervisor_pid() -> int | None:
    """The pid of the supervisor that started this worker, else None."""
    value = os.environ.get("RELAY_SUPERVISOR_PID")
    return int(value) if value and value.isdigit() else None


async def watch_supervisor(pid: int, stop: trio.Event, log: Logger) -> None:
    """Set *stop* (drain and exit) once the supervisor *pid* is gone.

    A supervisor killed with SIGKILL cannot pass the signal on: its workers
    would serve on, unsupervised and out of the operator's reach. A worker
    whose parent changed (the orphan was adopted by init) stops like on
    SIGTERM, within ``ORPHAN_CHECK`` seconds. (``PR_SET_PDEATHSIG`` cannot do
    this: Trio forks from a worker thread, and the signal would follow that
    thread's exit, not the supervisor's.)
    """
    while os.getppid() == pid:
        await trio.sleep(ORPHAN_CHECK)
    log.warning("relay.supervisor_gone", supervisor_pid=pid)
    stop.set()
