"""relay flood against an in-process relay: each mode, short and bounded.

Only what must hold is asserted (outcomes, loss, duplication, counts),
never speed. Each run is a second or two of real time. The handshake
generator runs in its own processes (as from the command line) unless a
test says otherwise.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
import trio

from relay.flood import (
    HandshakeOptions,
    IdleOptions,
    MessagesOptions,
    TargetUnreachable,
    parse_endpoint,
    run_handshake,
    run_idle,
    run_messages,
)
from relay.flood._ramp import RampOptions, run_ramp
from relay.flood._report import document, now_iso
from tests.conftest import Relay, RelayFactory, login, register
from tests.wsclient import ws_url


def open_connections(relay: Relay) -> float:
    value: float = relay.services.metrics.ws_connections.collect()[0].samples[0].value
    return value


async def token_for(client: httpx.AsyncClient, name: str = "flooder") -> str:
    await register(client, name)
    token: str = (await login(client, name))["access_token"]
    return token


async def test_valid_token_gets_101s_then_429s_past_the_bucket(relay_with: RelayFactory) -> None:
    relay, client = await relay_with(ws__handshake_rate_per_minute=60, ws__handshake_burst=60)
    options = HandshakeOptions(
        ws=parse_endpoint(ws_url(relay), "ws"),
        token=await token_for(client),
        count=80,
        concurrency=8,
        duration=10,
    )
    result = await run_handshake(options)
    counts = result.tally.counts()
    assert result.attempts == 80
    assert counts["101"] >= 1
    assert counts["429"] >= 1
    assert counts["101"] + counts["429"] == 80, counts
    assert 60 <= counts["101"] <= 70  # the burst, plus what refilled meanwhile
    assert result.tally.latencies("101").count == counts["101"]
    doc = document(
        "handshake",
        argv=["relay", "flood", "handshake"],
        started_at=now_iso(),
        params=options.params(),
        results=result.to_json(),
    )
    text = json.dumps(doc)
    assert options.token is not None
    assert options.token not in text
    assert doc["params"]["token"] == "given"
    assert doc["results"]["outcomes"]["429"]["count"] == counts["429"]


async def test_bad_token_gets_401s_or_429s(relay_with: RelayFactory) -> None:
    relay, _ = await relay_with(ws__handshake_rate_per_minute=60)
    result = await run_handshake(
        HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws"), bad_token=True, count=70)
    )
    counts = result.tally.counts()
    assert counts["401"] >= 1
    assert counts["429"] >= 1
    assert counts["401"] + counts["429"] == 70, counts
    assert counts["101"] == 0


async def test_foreign_origin_gets_403(relay_with: RelayFactory) -> None:
    relay, client = await relay_with()
    result = await run_handshake(
        HandshakeOptions(
            ws=parse_endpoint(ws_url(relay), "ws"),
            token=await token_for(client),
            origin="https://evil.example",
            count=20,
            rate=200,
        )
    )
    assert result.tally.counts()["403"] == 20


async def test_rate_and_duration_bound_a_run(relay_with: RelayFactory) -> None:
    """With no count, the run stops at its duration; the schedule sets the count."""
    relay, _ = await relay_with()
    result = await run_handshake(
        HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws"), rate=20, duration=1)
    )
    assert result.attempts == 20  # attempt k starts at k / 20 s, for k / 20 < 1
    assert result.tally.counts()["101"] == 20  # no token: admitted, to authenticate later


async def test_several_processes_share_one_count(relay_with: RelayFactory) -> None:
    """Two generator processes make exactly the attempts asked for, between them."""
    relay, _ = await relay_with()
    result = await run_handshake(
        HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws"), count=41, procs=2)
    )
    assert result.attempts == 41
    assert len(result.workers) == 2
    assert sum(w.started for w in result.workers) == 40  # plus the first attempt, made alone
    assert result.to_json()["generator"]["procs"] == 2


async def test_the_generator_can_run_in_this_process(relay_with: RelayFactory) -> None:
    """in_process runs the same engine in a thread, with the same accounting."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=60, ws__handshake_burst=10)
    result = await run_handshake(
        HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws"), count=30, in_process=True)
    )
    counts = result.tally.counts()
    assert result.attempts == 30
    assert counts["101"] + counts["429"] == 30, counts
    assert 10 <= counts["101"] <= 12  # the burst, plus what refilled meanwhile


async def test_each_source_address_has_its_own_bucket(relay_with: RelayFactory) -> None:
    """Two source addresses get two bursts of upgrades before the 429s."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=60, ws__handshake_burst=10)
    result = await run_handshake(
        HandshakeOptions(
            ws=parse_endpoint(ws_url(relay), "ws"),
            count=60,
            source_ips=("127.0.0.2", "127.0.0.3"),
        )
    )
    counts = result.tally.counts()
    assert counts["101"] + counts["429"] == 60, counts
    assert 20 <= counts["101"] <= 24  # two bursts of 10, plus what refilled meanwhile


async def test_cancelling_a_run_stops_it_at_once(relay_with: RelayFactory) -> None:
    """A cancelled 30 s run returns promptly, its generator processes stopped."""
    relay, _ = await relay_with()
    options = HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws"), rate=20, duration=30)
    with trio.fail_after(15):  # a hang guard, not a speed test
        with trio.move_on_after(1) as scope:
            await run_handshake(options)
    assert scope.cancelled_caught


async def test_nothing_listening_is_unreachable() -> None:
    """A port nobody listens on stops the run before it starts."""
    with pytest.raises(TargetUnreachable, match="unreachable"):
        await run_handshake(HandshakeOptions(ws=parse_endpoint("ws://127.0.0.1:1/ws", "ws")))


def ramp_options(relay: Relay, **changes: object) -> RampOptions:
    values: dict[str, object] = {
        "handshake": HandshakeOptions(ws=parse_endpoint(ws_url(relay), "ws")),
        "rates": (20.0, 40.0),
        "step_duration": 0.5,
        "http": parse_endpoint(relay.http_url, "http"),
        "pair_rate": 20.0,
        "server_pid": os.getpid(),  # the relay under test runs in this process
        "break_p99_ms": 60_000.0,
        "settle": 5.0,
    }
    return RampOptions(**(values | changes))  # type: ignore[arg-type]


async def test_a_ramp_runs_a_baseline_then_every_step(relay_with: RelayFactory) -> None:
    """With nothing broken, the ramp runs its baseline and each rate, with all their figures."""
    relay, _ = await relay_with(ws__handshake_rate_per_minute=60, ws__handshake_burst=5)
    with trio.fail_after(60):
        result = await run_ramp(ramp_options(relay))
    assert [step.offered for step in result.steps] == [0.0, 20.0, 40.0]
    for step in result.steps:
        assert step.pair is not None
        assert step.pair.pings > 0
        assert step.relay_cpu_s is not None
        assert not step.broken
    assert all(step.refused > 0 for step in result.steps[1:])
    doc = result.to_json()
    assert doc["breaking_rate_per_s"] is None
    assert doc["steps"][1]["flood"]["outcomes"]["429"]["count"] > 0
    json.dumps(doc)


async def test_a_ramp_stops_at_its_first_broken_step(relay_with: RelayFactory) -> None:
    """A step over the p99 threshold is the breaking rate; no step runs after it."""
    relay, _ = await relay_with()
    with trio.fail_after(60):
        result = await run_ramp(ramp_options(relay, break_p99_ms=0.001))
    assert [step.offered for step in result.steps] == [0.0, 20.0]
    assert result.steps[1].broken
    assert result.to_json()["breaking_rate_per_s"] == 20.0


async def test_messages_pairs_lose_and_duplicate_nothing(relay_with: RelayFactory) -> None:
    relay, _ = await relay_with()
    result = await run_messages(
        MessagesOptions(
            http=parse_endpoint(relay.http_url, "http"),
            ws=parse_endpoint(ws_url(relay), "ws"),
            pairs=2,
            rate=40,
            duration=1.5,
            drain=5,
        )
    )
    figures = result.ledger.result()
    assert result.setup.logged_in == 4
    assert result.connected == 4
    assert result.active_pairs == 2
    assert figures.sent == 60  # 20 per second per pair, for 1.5 s
    assert figures.accepted == figures.sent
    assert figures.delivered == figures.accepted
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.unconfirmed == 0
    assert figures.unknown == 0
    assert result.ledger.delivery_latency.summary().count == 60
    assert result.to_json()["messages"]["lost"] == 0


async def test_idle_holds_every_connection(relay_with: RelayFactory) -> None:
    relay, _ = await relay_with()
    result = await run_idle(
        IdleOptions(
            http=parse_endpoint(relay.http_url, "http"),
            ws=parse_endpoint(ws_url(relay), "ws"),
            connections=20,
            per_user_cap=8,
            hold=1,
        )
    )
    assert result.setup.logged_in == 3  # ceil(20 / 8) accounts
    assert result.established == 20
    assert result.survived == 20
    assert not result.failures
    assert not result.dropped
    assert result.held_for >= 1
    with trio.fail_after(5):  # the run closed what it opened
        while open_connections(relay):
            await trio.sleep(0.05)
