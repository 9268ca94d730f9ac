"""What one Redis round trip costs relay's process: coredis against relay.resp against bare Trio.

The scale-out path makes Redis calls per batch of messages (the bus's
``MGET`` and ``PUBLISH``, the limits' script pipelines) and reads pub/sub
pushes; at moderate rates each batch is one message, so the client's own
work per call is a cost per message. This measures, in one Trio process
(the CPU time of this process only: Redis's own work is not counted):

* a lone ``MGET`` of 2 keys, and a lone ``PUBLISH`` of 200 bytes, awaited
  one after the other, through coredis (as relay used it before), through
  :class:`relay.resp.RespClient`, and as bare bytes on a Trio stream (the
  floor: one write and one read);
* receiving a pub/sub message (a thread of this process publishes 3,000
  messages, one every 0.5 ms, on a plain socket; the Trio thread's CPU is
  counted), through coredis's pubsub and through :func:`relay.resp.open_subscription`.

    python bench/redis_client.py [--calls 3000] [--redis-url redis://127.0.0.1:6379/0]

Writes bench/results/redis_client.json and .md. Run it on a quiet machine
(``flock /tmp/machine.lock``): the figures are CPU, but a busy core slows
every wake-up.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import _harness as h
import trio

sys.path.insert(0, str(h.ROOT))
from relay.limits import redis_client  # noqa: E402  (after the path)
from relay.resp import RedisAddress, RespClient, open_subscription  # noqa: E402

REPEATS = 3  # each figure: the median of this many passes


async def cpu_per_call(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    """CPU µs of this process per awaited *call*, *calls* in a row."""
    await call()  # connect outside the measure
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1e6


def publish_from_a_thread(host: str, port: int, channel: bytes, count: int) -> threading.Thread:
    payload = b"y" * 200
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$200\r\n%s\r\n" % (len(channel), channel, payload)

    def run() -> None:
        with socket.create_connection((host, port)) as sock:
            for _ in range(count):
                sock.sendall(command)
                sock.recv(100)
                time.sleep(0.0005)

    return threading.Thread(target=run, daemon=True)


async def receive_cost(url: str, calls: int, library: str) -> float:
    """The Trio thread's CPU µs per pub/sub message received and handed to the caller."""
    address = RedisAddress.parse(url)
    channel = f"bench-client-{secrets.token_hex(4)}"
    got = 0
    done = trio.Event()

    async def with_coredis(task_status: trio.TaskStatus[None]) -> None:
        nonlocal got
        async with redis_client(url) as client, client.pubsub(
            channels=[channel], ignore_subscribe_messages=True
        ) as pubsub:
            task_status.started()
            async for _ in pubsub:
                got += 1
                if got == calls:
                    done.set()
                    return

    async def with_resp(task_status: trio.TaskStatus[None]) -> None:
        nonlocal got
        async with open_subscription(address, [channel], timeout=5) as subscription:
            task_status.started()
            async for batch in subscription.batches():
                got += len(batch)
                if got >= calls:
                    done.set()
                    return

    async with trio.open_nursery() as nursery:
        await nursery.start(with_coredis if library == "coredis" else with_resp)
        sender = publish_from_a_thread(address.host, address.port, channel.encode(), calls)
        started = time.thread_time()
        sender.start()
        with trio.fail_after(60):
            await done.wait()
        spent = time.thread_time() - started
        nursery.cancel_scope.cancel()
    return spent / calls * 1e6


async def measure(url: str, calls: int) -> dict[str, Any]:
    address = RedisAddress.parse(url)
    key = f"bench-client-{secrets.token_hex(4)}"
    figures: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for _ in range(REPEATS):
        async with redis_client(url) as core:
            note("coredis MGET", await cpu_per_call(calls, lambda: core.mget([key, key + "b"])))
            note("coredis PUBLISH", await cpu_per_call(calls, lambda: core.publish(key, b"x" * 200)))
        resp = RespClient(address, timeout=5)
        note("relay.resp MGET",
             await cpu_per_call(calls, lambda: resp.execute([["MGET", key, key + "b"]])))
        note("relay.resp PUBLISH",
             await cpu_per_call(calls, lambda: resp.execute([["PUBLISH", key, b"x" * 200]])))
        await resp.aclose()
        stream = await trio.open_tcp_stream(address.host, address.port)
        mget = b"*3\r\n$4\r\nMGET\r\n$%d\r\n%s\r\n$%d\r\n%sb\r\n" % (
            len(key), key.encode(), len(key) + 1, key.encode())

        async def bare() -> None:
            await stream.send_all(mget)
            await stream.receive_some(65536)

        note("bare Trio stream MGET", await cpu_per_call(calls, bare))
        await stream.aclose()
        note("coredis pub/sub receive", await receive_cost(url, calls, "coredis"))
        note("relay.resp pub/sub receive", await receive_cost(url, calls, "resp"))
    return {name: {"median_us": round(statistics.median(v), 1), "runs_us": [round(x, 1) for x in v]}
            for name, v in figures.items()}


def redis_version(url: str) -> str | None:
    async def ask() -> bytes | None:
        client = RespClient(RedisAddress.parse(url), timeout=5)
        (info,) = await client.execute([["INFO", "server"]])
        await client.aclose()
        return info if isinstance(info, bytes) else None

    info = trio.run(ask) or b""
    line = next((x for x in info.decode().splitlines() if x.startswith("redis_version:")), "")
    return line.partition(":")[2] or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    started = h.now_utc()
    figures = trio.run(measure, args.redis_url, args.calls)
    data = {"benchmark": "redis_client", "started_at": started, "finished_at": h.now_utc(),
            "command": h.command_line(), "machine": h.machine(), "calls": args.calls,
            "repeats": REPEATS, "figures": figures, "coredis_version": metadata.version("coredis"),
            "redis_version": redis_version(args.redis_url)}
    rows = [[name, f["median_us"], ", ".join(str(x) for x in f["runs_us"])]
            for name, f in figures.items()]
    md = "\n".join([
        "# Redis client: CPU per round trip in relay's process",
        "",
        h.machine_md(data["machine"]).replace(
            "Servers pinned to core 0, load generator to core 1.",
            "Nothing pinned: one Trio process (and, for pub/sub, one publishing thread); "
            f"Redis {data['redis_version']} on the same machine, coredis "
            f"{data['coredis_version']}."),
        "",
        f"Run: `{' '.join(data['command'])}`, {started} → {data['finished_at']}. "
        f"{args.calls} calls per pass, median of {REPEATS} passes; CPU of this process "
        "(`time.process_time`; pub/sub: the Trio thread's `time.thread_time`), Redis's own "
        "work not counted. What each row measures: the module docstring.",
        "",
        h.md_table(["call", "µs CPU per call (median)", "passes"], rows),
        "",
    ])
    h.write_results("redis_client", data, md)
    print(md)


if __name__ == "__main__":
    main()
