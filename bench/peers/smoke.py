"""Smoke check of the peer servers: start each, drive it, print PASS/FAIL per peer.

    python bench/peers/smoke.py      # venv active; the Node peer needs `npm install` here

Each peer is started twice: in relay mode (ready frames, the user/access_token
forms, a send from a to b reaching both of b's connections, ack ignored, bad
frames refused; stopped with SIGTERM) and with --echo (stopped with SIGINT).
Exits 1 if any peer fails. Not a test: pytest never collects it.
"""

from __future__ import annotations

import importlib.util
import json
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

HERE = Path(__file__).resolve().parent
BODY = '{"ct": "SGVsbG8=",  "v": [1, 2.5, null]}'  # odd spacing: shows a verbatim embed
SEND = '{"type":"send","id":"c-1","to":"b","extra":true,"body":' + BODY + "}"
BAD_FRAMES = ("not json", "[1]", '{"type":"hello"}', '{"type":"send","id":"c-2","to":"b"}')


class Fail(Exception):
    pass


@dataclass(frozen=True)
class PeerSpec:
    name: str
    argv: list[str]
    verbatim: bool  # embeds the body text exactly as sent (not re-serialised)
    missing: str | None = None  # why it cannot run here


def peers() -> list[PeerSpec]:
    py = sys.executable
    node_missing = None
    if shutil.which("node") is None:
        node_missing = "node is not installed"
    elif not (HERE / "node_modules" / "ws").is_dir():
        node_missing = "ws is not installed: cd bench/peers && npm install"
    ws_trio = importlib.util.find_spec("websockets.trio") is not None
    return [
        PeerSpec("trio-websocket", [py, str(HERE / "trio_ws_peer.py")], True),
        PeerSpec("websockets-asyncio", [py, str(HERE / "websockets_asyncio_peer.py")], True),
        PeerSpec(
            "websockets-trio",
            [py, str(HERE / "websockets_trio_peer.py")],
            True,
            None if ws_trio else "this websockets has no websockets.trio",
        ),
        PeerSpec("node-ws", ["node", str(HERE / "node_ws_peer.js")], False, node_missing),
    ]


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise Fail(what)


async def frame(ws: WebSocketConnection) -> tuple[dict[str, Any], str]:
    raw = await ws.get_message()
    expect(isinstance(raw, str), f"expected a text frame, got {raw!r}")
    return json.loads(raw), str(raw)


async def check_relay(port: int, verbatim: bool) -> None:
    base = f"ws://127.0.0.1:{port}"
    junk_auth = [(b"authorization", b"Bearer not-a-token")]
    async with (
        open_websocket_url(f"{base}/ws?user=a") as a,
        open_websocket_url(f"{base}/ws?access_token=b", extra_headers=junk_auth) as b1,
        open_websocket_url(f"{base}/any/path?user=b") as b2,
    ):
        readies = [(await frame(ws))[0] for ws in (a, b1, b2)]
        for ready, user in zip(readies, "abb", strict=True):
            expect(set(ready) == {"type", "user", "device", "session"}, f"ready: {ready}")
            expect(ready["type"] == "ready" and ready["user"] == user, f"ready: {ready}")
            expect(ready["device"].startswith("d-"), f"ready device: {ready}")
            expect(ready["session"].startswith("s-"), f"ready session: {ready}")
        expect(len({r["device"] for r in readies}) == 3, f"devices not distinct: {readies}")
        await a.send_message('{"type":"ack","id":"m-1"}')  # ignored: no answer at all
        await a.send_message(SEND)
        accepted, _ = await frame(a)
        expect(accepted.get("type") == "accepted" and accepted.get("id") == "c-1", f"{accepted}")
        expect(isinstance(accepted.get("message_id"), str), f"message_id: {accepted}")
        for b in (b1, b2):
            message, raw = await frame(b)
            want = {"type": "message", "id": accepted["message_id"], "from": "a"}
            expect(message.items() >= want.items(), f"message: {message}")
            expect(message["from_device"] == readies[0]["device"], f"from_device: {message}")
            expect(message["body"] == json.loads(BODY), f"body: {message}")
            expect(abs(message["sent_at"] - time.time()) < 10, f"sent_at: {message}")
            expect(not verbatim or f'"body":{BODY}' in raw, f"body not verbatim: {raw}")
        for bad in BAD_FRAMES:
            await a.send_message(bad)
            error, _ = await frame(a)
            expect(error.get("type") == "error", f"{bad!r} -> {error}")
            expect(error.get("code") == "invalid_frame", f"{bad!r} -> {error}")
            expect(isinstance(error.get("message"), str), f"{bad!r} -> {error}")


async def check_echo(port: int, verbatim: bool) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?user=a") as ws:
        for data in (SEND, "not json", "é" * 5000, b"\x00\x01 binary"):
            await ws.send_message(data)
            echoed = await ws.get_message()
            expect(echoed == data, f"echo of {data[:40]!r} came back as {echoed[:40]!r}")


def run_peer(spec: PeerSpec, echo: bool) -> None:
    argv = [*spec.argv, "--host", "127.0.0.1", "--port", "0", *(["--echo"] if echo else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if readable else ""
        expect(line.startswith("LISTENING "), f"no LISTENING line, got {line!r}")
        port = int(line.split()[1])
        expect(port > 0, f"bad port in {line!r}")
        check = check_echo if echo else check_relay
        trio.run(_bounded, check, port, spec.verbatim)
        sig = signal.SIGINT if echo else signal.SIGTERM
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
        expect(proc.returncode == 0, f"exit {proc.returncode} on {sig.name}: {err[-500:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def _bounded(check: Any, port: int, verbatim: bool) -> None:
    with trio.fail_after(15):
        await check(port, verbatim)


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    failed = 0
    for spec in peers():
        if spec.missing is not None:
            print(f"FAIL {spec.name}: {spec.missing}", flush=True)
            failed += 1
            continue
        try:
            for echo in (False, True):
                run_peer(spec, echo)
        except Exception as exc:
            mode = "echo" if echo else "relay"
            print(f"FAIL {spec.name} ({mode}): {describe(exc)}", flush=True)
            failed += 1
        else:
            print(f"PASS {spec.name}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
