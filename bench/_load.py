"""One load generator for relay and the peers, built from ``relay.flood``'s own pieces.

* messages: ``relay.flood._messages._Run`` (the engine behind ``relay flood
  messages``) drives relay and every peer alike. For relay its devices are
  real accounts (``open_accounts``, as the CLI does); for a peer they are
  names, and each connection opens ``/ws?user=NAME`` (the peers' no-auth
  subset of the protocol) through :class:`PeerOpener`. Everything else —
  schedule, frames, acks, ledger, latency — is flood's code, unchanged.
* idle: ``relay.flood._idle._Run`` the same way.
* handshakes: ``relay.flood.run_handshake`` as is (peers accept any path).
* echo: a closed loop over trio-websocket clients opened by flood's
  ``ws_session`` (flood has no echo mode; the peers' ``--echo`` has no
  protocol, so this is the one bench-only loop).

Server CPU and RSS are sampled from /proc at the phase changes of flood's
runs (``phase`` goes setup → connect/ramp → send/hold → drain/closing).
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from _harness import Server, client_cpu
from trio_websocket import ConnectionClosed, WebSocketConnection

from relay.flood import (
    HandshakeOptions,
    IdleOptions,
    MessagesOptions,
    parse_endpoint,
    run_handshake,
)
from relay.flood._accounts import Account, SetupTally, open_accounts
from relay.flood._common import WsFailure, preflight, ws_session
from relay.flood._idle import _Run as IdleRun
from relay.flood._idle import raise_fd_limit
from relay.flood._messages import _Run as MessagesRun
from relay.flood._opener import HANDSHAKE_TIMEOUT, OpenBody, Opener
from relay.flood._stats import Latencies
from relay.flood._target import Endpoint, pick

POLL = 0.005


class PeerOpener(Opener):
    """Opens ``/ws?user=<token>`` on a peer: the token *is* the user name there."""

    async def open(  # type: ignore[override]
        self,
        body: OpenBody,
        *,
        token: str | None,
        source: str | None,
        deadline: float,
        queue_size: int = 1,
    ) -> WsFailure | None:
        ws = self._ws
        endpoint = Endpoint(ws.scheme, ws.host, ws.port, f"/ws?user={token}")
        await self._slots.acquire()
        held = True

        def done() -> None:
            nonlocal held
            if held:
                held = False
                self._slots.release()

        async def run_body(conn: WebSocketConnection) -> None:
            await body(conn, done)

        left = max(0.1, deadline - trio.current_time())
        try:
            return await ws_session(
                endpoint,
                run_body,
                token=None,
                local_address=source,
                handshake_timeout=min(HANDSHAKE_TIMEOUT, left),
                queue_size=queue_size,
            )
        finally:
            done()


def _peer_accounts(count: int, sources: tuple[str, ...]) -> list[Account]:
    return [
        Account(f"u{i}", f"id{i}", f"d{i}", f"u{i}", pick(sources, i)) for i in range(count)
    ]


async def _sample_until(cond: Callable[[], bool]) -> None:
    while not cond():
        await trio.sleep(POLL)


async def messages(
    server: Server,
    *,
    pairs: int,
    rate: float,
    duration: float,
    drain: float = 5.0,
    source_ips: tuple[str, ...] = (),
    on_send: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One flood messages run (relay or peer) with server/client CPU over the window."""
    options = MessagesOptions(
        http=parse_endpoint(server.http_url, "http"),
        ws=parse_endpoint(server.ws_url, "ws"),
        pairs=pairs,
        rate=rate,
        duration=duration,
        drain=drain,
        source_ips=source_ips,
        setup_timeout=120.0,
    )
    run = MessagesRun(options)
    if server.kind == "relay":
        await preflight(ws=options.ws, http=options.http, allow_remote=False,
                        source=pick(source_ips, 0))
        accounts = await open_accounts(options.http, 2 * pairs, sources=source_ips,
                                       tally=run.result.setup, timeout=120.0)
    else:
        run.opener = PeerOpener(options.ws, 50)
        accounts = _peer_accounts(2 * pairs, source_ips)
    marks: dict[str, float] = {}

    async def sampler() -> None:
        await _sample_until(lambda: run.phase == "send")
        if on_send is not None:
            on_send()
        marks["srv0"], marks["cli0"], marks["t0"] = (
            server.cpu_seconds(), client_cpu(), trio.current_time())
        await _sample_until(lambda: run.phase == "drain")
        marks["srv_send"], marks["cli_send"], marks["t_send"] = (
            server.cpu_seconds(), client_cpu(), trio.current_time())
        await _sample_until(run.stop.is_set)
        marks["srv1"], marks["cli1"], marks["t1"] = (
            server.cpu_seconds(), client_cpu(), trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler)
        await run.go_all(accounts)
        with trio.move_on_after(2):
            await _sample_until(lambda: "srv1" in marks)
        nursery.cancel_scope.cancel()
    result = run.result.to_json()
    m = result["messages"]
    window = result["send_window_s"] or 1e-9
    out: dict[str, Any] = {
        "generator": "relay.flood._messages engine (bench/_load.py messages)",
        "offered_per_s": rate,
        "pairs": pairs,
        "flood": result,
        "delivered_per_s": m["delivered"] / window,
        "p50_ms": result["latency_ms"]["send_to_delivered"]["p50_ms"],
        "p99_ms": result["latency_ms"]["send_to_delivered"]["p99_ms"],
        "accepted_p99_ms": result["latency_ms"]["send_to_accepted"]["p99_ms"],
        "lost": m["lost"],
        "refused": m["refused"],
    }
    if "srv1" in marks and m["delivered"]:
        wall = marks["t1"] - marks["t0"]
        out["server_cpu_s"] = marks["srv1"] - marks["srv0"]
        out["server_cpu_us_per_msg"] = 1e6 * out["server_cpu_s"] / m["delivered"]
        out["server_cpu_share_send"] = (marks["srv_send"] - marks["srv0"]) / max(
            1e-9, marks["t_send"] - marks["t0"])
        out["client_cpu_share_send"] = (marks["cli_send"] - marks["cli0"]) / max(
            1e-9, marks["t_send"] - marks["t0"])
        out["measured_wall_s"] = wall
    return out


ECHO_PAYLOAD = '{"type":"send","id":"%d","to":"u1","body":{"fid":%d,"t":0.0000000000}}'


async def echo(server: Server, *, connections: int, duration: float) -> dict[str, Any]:
    """Closed loop: each connection sends one frame and waits for its echo, for *duration*."""
    endpoint = parse_endpoint(server.ws_url, "ws")
    latencies = Latencies()
    count = 0
    failures = 0
    go = trio.Event()
    stop_at = math.inf

    async def body(ws: WebSocketConnection) -> None:
        nonlocal count
        await go.wait()
        i = 0
        try:
            while trio.current_time() < stop_at:
                t = trio.current_time()
                await ws.send_message(ECHO_PAYLOAD % (i, i))
                await ws.get_message()
                latencies.add(trio.current_time() - t)
                count += 1
                i += 1
        except ConnectionClosed:
            pass

    async def one() -> None:
        nonlocal failures
        failure = await ws_session(endpoint, body, token=None, local_address=None,
                                   queue_size=4)
        if failure is not None:
            failures += 1

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)
        await trio.sleep(1.0)  # let them connect
        srv0, cli0, t0 = server.cpu_seconds(), client_cpu(), trio.current_time()
        stop_at = t0 + duration
        go.set()
        await trio.sleep_until(stop_at)
        await trio.sleep(0.05)
        srv1, cli1, t1 = server.cpu_seconds(), client_cpu(), trio.current_time()
    summary = latencies.summary().to_json()
    return {
        "generator": "bench/_load.py echo (closed loop, trio-websocket clients via flood's ws_session)",
        "connections": connections,
        "failures": failures,
        "messages": count,
        "echoed_per_s": count / (t1 - t0),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "server_cpu_s": srv1 - srv0,
        "server_cpu_us_per_msg": 1e6 * (srv1 - srv0) / max(1, count),
        "server_cpu_share": (srv1 - srv0) / (t1 - t0),
        "client_cpu_share": (cli1 - cli0) / (t1 - t0),
    }


async def relay_token(server: Server) -> str:
    """One throw-away relay account's access token (register + login)."""
    http = parse_endpoint(server.http_url, "http")
    accounts = await open_accounts(http, 1, tally=SetupTally(), timeout=60)
    if not accounts:
        raise RuntimeError("could not create an account on the relay")
    return accounts[0].token


async def handshakes(
    server: Server,
    *,
    duration: float,
    concurrency: int = 50,
    token: str | None = None,
    source_ips: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``relay flood handshake`` (as fast as possible, closed loop) with server CPU."""
    options = HandshakeOptions(
        ws=parse_endpoint(server.ws_url, "ws"),
        concurrency=concurrency,
        duration=duration,
        token=token,
        source_ips=source_ips,
    )
    srv0, cli0, t0 = server.cpu_seconds(), client_cpu(), trio.current_time()
    result = await run_handshake(options)
    await trio.sleep(0.2)  # let the server finish the last closes
    srv1, cli1, t1 = server.cpu_seconds(), client_cpu(), trio.current_time()
    data = result.to_json()
    accepted = data["outcomes"]["101"]
    return {
        "generator": "relay.flood.run_handshake",
        "token": "valid access token" if token else "none",
        "concurrency": concurrency,
        "flood": data,
        "accepted_per_s": accepted["per_s"],
        "accepted_p99_ms": (accepted["latency_ms"] or {}).get("p99_ms"),
        "attempts_per_s": data["attempts_per_s"],
        "non_101": {k: v["count"] for k, v in data["outcomes"].items()
                    if k != "101" and v["count"]},
        "server_cpu_us_per_handshake": 1e6 * (srv1 - srv0) / max(1, accepted["count"]),
        "server_cpu_share": (srv1 - srv0) / (t1 - t0),
        "client_cpu_share": (cli1 - cli0) / (t1 - t0),
    }


async def idle(
    server: Server,
    *,
    connections: int,
    hold: float,
    source_ips: tuple[str, ...],
    concurrency: int = 100,
    ramp_timeout: float = 180.0,
    per_user_cap: int = 64,
) -> dict[str, Any]:
    """flood's idle engine; server RSS before the ramp and at the end of the hold."""
    options = IdleOptions(
        http=parse_endpoint(server.http_url, "http"),
        ws=parse_endpoint(server.ws_url, "ws"),
        connections=connections,
        hold=hold,
        per_user_cap=per_user_cap,
        concurrency=concurrency,
        ramp_timeout=ramp_timeout,
        source_ips=source_ips,
        setup_timeout=300.0,
    )
    run = IdleRun(options)
    run.result.fd_limit = raise_fd_limit(connections + 256)
    if server.kind == "relay":
        await preflight(ws=options.ws, http=options.http, allow_remote=False,
                        source=pick(source_ips, 0))
        accounts = await open_accounts(options.http, options.accounts, sources=source_ips,
                                       tally=run.result.setup, timeout=300.0)
        tokens = [(a.token, a.source) for a in accounts]
    else:
        run.opener = PeerOpener(options.ws, concurrency)
        tokens = [(f"u{i}", None) for i in range(options.accounts)]
    marks: dict[str, Any] = {"rss_hold": []}

    await trio.sleep(0.5)  # let the login traffic settle
    marks["rss0"] = server.rss_kb()

    async def sampler() -> None:
        await _sample_until(lambda: run.phase == "hold")
        while run.phase == "hold":
            marks["rss_hold"].append(server.rss_kb())
            await trio.sleep(0.25)

    close_errors: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            await run.go(tokens)
            nursery.cancel_scope.cancel()
    except* Exception as group:
        # flood's idle engine (trio-websocket client) can raise while closing
        # (e.g. LocalProtocolError: a Pong to the relay's heartbeat ping after
        # the client's close). The figures up to the end of the hold are kept.
        if run.phase != "closing":
            raise
        close_errors = sorted({repr(e)[:120] for e in _leaves(group)})[:5]
    result = run.result.to_json()
    rss_end = marks["rss_hold"][-1] if marks["rss_hold"] else None
    held = result["survived"]
    per_conn = None
    if rss_end is not None and "rss0" in marks and held:
        per_conn = (rss_end - marks["rss0"]) * 1024 / held / 1024
    return {
        "generator": "relay.flood._idle engine (bench/_load.py idle)",
        "connections": connections,
        "flood": result,
        "established": result["established"],
        "survived": held,
        "rss_before_kb": marks.get("rss0"),
        "rss_end_of_hold_kb": rss_end,
        "rss_max_hold_kb": max(marks["rss_hold"]) if marks["rss_hold"] else None,
        "kb_per_connection": per_conn,
        "errors_while_closing": close_errors,
    }


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


def run_trio(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    async def main() -> Any:
        return await fn(*args, **kwargs)

    return trio.run(main)


SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 12))
_ = os
