"""ConnectionLife: heartbeat, expiry and bad-frame verdicts on exact times, no sockets."""

from __future__ import annotations

from relay.ws._life import (
    EXPIRED,
    HEARTBEAT_TIMEOUT,
    PING,
    POLICY,
    Close,
    ConnectionLife,
    LifePolicy,
)

POLICY_25_10 = LifePolicy(heartbeat_interval=25.0, heartbeat_timeout=10.0, bad_frame_limit=10)


def life(expires_at: float = 900.0) -> ConnectionLife:
    return ConnectionLife(POLICY_25_10, now=0.0, expires_at=expires_at)


def test_the_first_ping_is_due_one_interval_after_the_start() -> None:
    """Nothing happens before 25 s; at 25 s, a ping."""
    conn = life()
    assert conn.deadline() == 25.0
    assert conn.on_timer(24.9) is None
    assert conn.on_timer(25.0) is PING
    assert conn.deadline() == 35.0  # the pong is due 10 s later


def test_a_pong_schedules_the_next_ping_one_interval_after_the_last() -> None:
    """Answered pings keep the connection open: next ping at 50 s, then 75 s."""
    conn = life()
    conn.on_timer(25.0)
    conn.on_pong()
    assert conn.on_timer(35.0) is None
    assert conn.deadline() == 50.0
    assert conn.on_timer(50.0) is PING


def test_no_pong_and_no_frame_within_the_timeout_closes_1013() -> None:
    """A peer that stops reading goes quiet: closed at exactly ping + timeout."""
    conn = life()
    conn.on_timer(25.0)
    assert conn.on_timer(34.9) is None
    assert conn.on_timer(35.0) == HEARTBEAT_TIMEOUT
    assert conn.closed == Close(1013, "heartbeat timeout")


def test_any_frame_after_the_ping_counts_as_alive() -> None:
    """Inbound traffic proves the peer alive even if the pong is lost."""
    conn = life()
    conn.on_timer(25.0)
    conn.on_inbound()
    assert conn.on_timer(35.0) is None
    assert conn.closed is None


def test_frames_before_the_ping_do_not_count() -> None:
    """Only traffic since the ping proves the peer alive now."""
    conn = life()
    conn.on_inbound()
    conn.on_timer(25.0)
    assert conn.on_timer(35.0) == HEARTBEAT_TIMEOUT


def test_our_own_reader_waiting_is_not_the_peers_fault() -> None:
    """When our reader waits on a full pipeline, the peer's silence is ours: not closed."""
    conn = life()
    conn.on_timer(25.0)
    conn.reader_waiting = True
    assert conn.on_timer(35.0) is None


def test_the_token_expiry_closes_4001_at_exactly_its_time() -> None:
    """Expiry wins over everything, at its second."""
    conn = life(expires_at=30.0)
    conn.on_timer(25.0)
    assert conn.deadline() == 30.0
    assert conn.on_timer(29.99) is None
    assert conn.on_timer(30.0) == EXPIRED


def test_a_refresh_moves_the_expiry_later_never_earlier() -> None:
    """A refreshed token extends the connection; an older one changes nothing."""
    conn = life(expires_at=30.0)
    conn.on_refresh(1_000.0)
    conn.on_refresh(500.0)
    assert conn.expires_at == 1_000.0
    assert conn.on_timer(30.0) is PING  # the overdue ping, not the old expiry
    assert conn.closed is None


def test_ten_bad_frames_in_a_row_close_1008_and_one_is_forgiven_every_six_seconds() -> None:
    """bad_frame_limit refusals at once close; spread out by 6 s they never add up."""
    conn = life()
    assert all(conn.on_bad_frame(0.0) is None for _ in range(10))
    assert conn.on_bad_frame(0.0) == POLICY
    steady = life()
    assert all(steady.on_bad_frame(6.0 * i) is None for i in range(100))


def test_the_first_close_wins() -> None:
    """Once closing, later verdicts are ignored and timers stop."""
    conn = life(expires_at=30.0)
    assert conn.close(Close(4003, "session revoked")) == Close(4003, "session revoked")
    assert conn.close(EXPIRED) is None
    assert conn.on_timer(30.0) is None
    assert conn.closed == Close(4003, "session revoked")
