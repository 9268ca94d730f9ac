"""The shared accept loop: a handler's failure ends its own connection only."""

from __future__ import annotations

import trio

from relay.net import Admission, ConnectionSlots, Ticket, serve_admitted


async def test_a_handler_that_raises_ends_only_its_connection() -> None:
    """The error is reported with the peer's source; the slot comes back; accepting goes on."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    budget = ConnectionSlots(total=10)
    errors: list[tuple[str, Exception]] = []
    served = trio.Event()
    calls = 0

    async def handler(stream: trio.SocketStream, ticket: Ticket) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(107, "Transport endpoint is not connected")
        served.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_admitted(
                listeners,
                Admission([(budget, 1.0)]),
                handler,
                handler_nursery=nursery,
                on_turnaway=lambda source, turnaway: None,
                on_handler_error=lambda source, exc: errors.append((source, exc)),
                task_status=task_status,
            )
        )
        with trio.fail_after(5):
            for _ in range(2):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
            await served.wait()
        nursery.cancel_scope.cancel()
    assert [(source, type(exc)) for source, exc in errors] == [("127.0.0.1", OSError)]
    assert budget.used == 0
