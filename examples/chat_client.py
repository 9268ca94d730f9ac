"""A tiny relay chat client: log in over HTTP, chat over one WebSocket.

    relay serve --dev &
    export RELAY_PASSWORD='a long password'
    python examples/chat_client.py --user bob --register &
    python examples/chat_client.py --user alice --register --to bob   # type lines

Incoming messages are printed to stdout and acked; status goes to stderr.
The client remembers its device: the first login registers one and writes its
id to a small state file (``--state``, default ``~/.relay-chat/<user>.json``);
later runs log in as that device, so messages that arrived while it was away
are replayed to it. ``--new-device`` registers (and remembers) another.
``--send TEXT`` exits once its message is accepted, ``--receive N`` after N
messages; ``--timeout`` bounds both. It does what every client must (see
docs/protocol.md): resend unaccepted messages with the same id after a
reconnect, dedupe incoming ones by id, refresh the access token before it
expires, reconnect with backoff. Bodies are plain strings here; a real client
sends ciphertext.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import random
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url
from trio_websocket import WebSocketConnection as Ws

RECONNECT = {1000, 1001, 1006, 1011, 1013}  # transient closes: reconnect with backoff
RETRY = {"rate_limited", "store_unavailable"}  # not stored: send again, same id
MAX_BACKOFF = 60.0
SEEN_MAX = 10_000  # message ids remembered for deduplication


class Fatal(Exception):
    """Reconnecting cannot help: stop and tell the user."""


def status(text: str) -> None:
    print(f"* {text}", file=sys.stderr, flush=True)


class State:
    """This user's device id, kept between runs in a small JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def device_id(self) -> str | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            value = json.loads(self.path.read_text()).get("device_id")
        except (OSError, ValueError):
            return None
        return value if isinstance(value, str) else None

    def save_device(self, device_id: str) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"device_id": device_id}) + "\n")


class Client:
    def __init__(self, args: argparse.Namespace, password: str, http: httpx.AsyncClient) -> None:
        self.args, self.password, self.http = args, password, http
        self.state = State(state_path(args))
        self.grant: dict[str, Any] = {}
        self.expires_at = 0.0  # trio clock time when the access token expires
        self.outbox: dict[str, dict[str, Any]] = {}  # client id -> send frame, until accepted
        self.in_flight: set[str] = set()  # sent on this connection, no answer yet
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.wakeup, self.done = trio.Event(), trio.Event()
        self.input_done = self.failed = False
        self.received, self.backoff, self.pause_until = 0, 0.5, 0.0

    # -- HTTP: account, login, token refresh ------------------------------
    async def login(self) -> None:
        creds = {"username": self.args.user, "password": self.password}
        if self.args.register:
            r = await self.http.post("/api/accounts", json=creds)
            if r.status_code not in (201, 409):  # 409: it exists already, fine
                raise Fatal(f"registration failed: {r.status_code} {r.text}")
        remembered = None if self.args.new_device else self.state.device_id()
        device = self.args.device or remembered
        body = {**creds, "device_id": device} if device else creds
        r = await self.http.post("/api/login", json=body)
        if r.status_code == 404 and device and not self.args.device:  # deleted since: a new one
            status(f"device {device} is gone; registering a new one")
            r = await self.http.post("/api/login", json=creds)
        if r.status_code != 200:
            raise Fatal(f"login failed: {r.status_code} {r.text}")
        self.take(r.json())
        known = " (remembered)" if device == self.grant["device_id"] else " (new)"
        self.state.save_device(self.grant["device_id"])
        status(f"logged in as {self.args.user}, device {self.grant['device_id']}{known}")

    def take(self, grant: dict[str, Any]) -> None:
        self.grant = grant
        self.expires_at = trio.current_time() + grant["expires_in"]

    async def refresh(self) -> None:
        # The refresh token rotates: use each one once, and keep the new one.
        token = self.grant["refresh_token"]
        r = await self.http.post("/api/token/refresh", json={"refresh_token": token})
        if r.status_code == 401:
            raise Fatal("the session has ended (logged out or revoked); log in again")
        r.raise_for_status()
        self.take(r.json())

    # -- the connection loop ---------------------------------------------
    async def run(self) -> None:
        try:
            await self.login()
            if self.args.receive == 0:  # log in (registering the device), then leave
                self.done.set()
            while not self.done.is_set():
                try:
                    delay = await self.attempt()
                except (HandshakeError, httpx.HTTPError) as exc:  # relay unreachable
                    status(f"cannot reach the relay: {exc!r}")
                    delay = self.pause()
                if delay > 0:
                    status(f"reconnecting in {delay:.1f} s")
                    await trio.sleep(delay)
        except (Fatal, httpx.HTTPError) as exc:
            status(f"giving up: {exc}")
            self.failed = True
            self.done.set()

    def pause(self) -> float:
        """Exponential backoff with jitter, so that clients do not return in step."""
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        return self.backoff * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not crypto)

    async def attempt(self) -> float:
        """One connection, until it closes; how long to wait before the next."""
        try:
            await self.connect()
            return 0
        except ConnectionRejected as exc:  # refused before the upgrade
            if exc.status_code == 401:  # expired or revoked token
                await self.refresh()
                return 0
            if exc.status_code == 429:  # too many handshakes from this IP
                headers = {k.decode().lower(): v.decode() for k, v in exc.headers}
                return float(headers.get("retry-after", "1"))
            if exc.status_code == 503:  # overloaded or shutting down
                return self.pause()
            raise Fatal(f"handshake refused with HTTP {exc.status_code}") from None
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else 1006
            status(f"connection closed: {exc.reason}")
        if code == 4001:  # the access token expired: refresh, reconnect at once
            await self.refresh()
            return 0
        if code == 4003:
            raise Fatal("session revoked or account deleted (4003); log in again")
        if code not in RECONNECT:  # 1008, 1009: our bug; unknown codes: don't loop
            raise Fatal(f"closed with {code}")
        return self.pause()

    async def connect(self) -> None:
        """Returns when done; raises ConnectionClosed when the relay goes away."""
        headers = [(b"authorization", f"Bearer {self.grant['access_token']}".encode())]
        async with open_websocket_url(self.args.ws, extra_headers=headers) as ws:
            ready = json.loads(await ws.get_message())
            status(f"connected as {ready['user']} (device {ready['device']})")
            self.backoff = 0.5
            async with trio.open_nursery() as nursery:
                stop = nursery.cancel_scope.cancel
                nursery.start_soon(self.read, ws, stop)
                nursery.start_soon(self.flush, ws)
                nursery.start_soon(self.keep_token_fresh, ws)
                await self.done.wait()
                stop()
            closed = ws.closed
        if not self.done.is_set():
            raise ConnectionClosed(closed)

    async def read(self, ws: Ws, stop: Callable[[], None]) -> None:
        try:
            while True:
                await self.handle(ws, json.loads(await ws.get_message()))
        except ConnectionClosed:
            stop()

    async def handle(self, ws: Ws, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "message":
            if frame["id"] not in self.seen:  # replays repeat what was not acked yet
                self.seen[frame["id"]] = None
                if len(self.seen) > SEEN_MAX:
                    self.seen.popitem(last=False)
                body = frame["body"]
                text = body if isinstance(body, str) else json.dumps(body)
                print(f"{frame['from']}: {text}", flush=True)
                self.received += 1
            # Ack after handling, duplicates too (the first ack may have been lost).
            await ws.send_message(json.dumps({"type": "ack", "id": frame["id"]}))
            if self.args.receive and self.received >= self.args.receive:
                self.done.set()
        elif kind == "accepted":
            self.outbox.pop(frame["id"], None)
            self.in_flight.discard(frame["id"])
            status(f"accepted {frame['id']} as message {frame['message_id']}")
            self.check_done()
        elif kind == "error":
            ref, code = frame.get("ref"), frame["code"]
            status(f"error {code}: {frame['message']}" + (f" (send {ref})" if ref else ""))
            if ref in self.outbox and code in RETRY:
                self.in_flight.discard(ref)
                self.pause_until = trio.current_time() + 1.0
                self.wakeup.set()
            elif ref in self.outbox:  # refused for good (unknown_recipient, ...)
                del self.outbox[ref]
                self.failed = True
                self.check_done()
        # Other frames (prekeys_low, types added later) are ignored.

    async def flush(self, ws: Ws) -> None:
        """Send what the outbox holds, in order; after a reconnect, all of it again."""
        self.in_flight.clear()
        try:
            while True:
                todo = [f for cid, f in self.outbox.items() if cid not in self.in_flight]
                if not todo:
                    self.wakeup = trio.Event()
                    await self.wakeup.wait()
                    continue
                await trio.sleep_until(self.pause_until)
                for frame in todo:
                    self.in_flight.add(frame["id"])
                    await ws.send_message(json.dumps(frame))
        except ConnectionClosed:
            pass  # read() sees the close too, and ends the connection

    async def keep_token_fresh(self, ws: Ws) -> None:
        margin = min(60.0, self.grant["expires_in"] / 4)
        while True:
            await trio.sleep_until(self.expires_at - margin)
            try:
                # Shielded: a refresh abandoned midway may have spent the old token.
                with trio.CancelScope(shield=True):
                    await self.refresh()
                await ws.send_message(
                    json.dumps({"type": "refresh", "token": self.grant["access_token"]})
                )
            except (Fatal, httpx.HTTPError) as exc:  # the relay closes with 4001 at expiry
                status(f"token refresh failed: {exc}")
                return
            except ConnectionClosed:
                return

    # -- input ----------------------------------------------------------
    def enqueue(self, text: str) -> None:
        cid = uuid.uuid4().hex  # the idempotency key: a resend reuses it
        self.outbox[cid] = {"type": "send", "id": cid, "to": self.args.to, "body": text}
        self.wakeup.set()

    def check_done(self) -> None:
        if self.input_done and not self.outbox:
            self.done.set()

    async def read_stdin(self) -> None:
        while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            if line.strip():
                self.enqueue(line.rstrip("\n"))
        self.input_done = True
        self.check_done()


async def main(args: argparse.Namespace, password: str) -> int:
    async with httpx.AsyncClient(base_url=args.http, timeout=10) as http:
        client = Client(args, password, http)
        if args.send is not None:
            client.enqueue(args.send)
            client.input_done = True
        with trio.move_on_after(args.timeout or math.inf) as timer:
            async with trio.open_nursery() as nursery:
                if args.to and args.send is None and args.receive is None:
                    nursery.start_soon(client.read_stdin)
                await client.run()
                nursery.cancel_scope.cancel()
        if timer.cancelled_caught:
            status(f"timed out after {args.timeout} s")
            return 1
        return 1 if client.failed else 0


def state_path(args: argparse.Namespace) -> Path:
    """Where this user's device id is kept: one file per user and relay."""
    base = Path(args.state) if args.state else Path.home() / ".relay-chat"
    relay = args.http.split("://", 1)[-1].replace(":", "_").replace("/", "_")
    return base / f"{args.user.lower()}@{relay}.json"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--http", default="http://127.0.0.1:8080", help="the relay's HTTP API")
    p.add_argument("--ws", default="ws://127.0.0.1:8765/ws", help="the relay's WebSocket URL")
    p.add_argument("--user", required=True)
    p.add_argument("--password", help="default: $RELAY_PASSWORD, else a prompt")
    p.add_argument("--register", action="store_true", help="create the account first")
    p.add_argument("--device", help="log in as this device (default: the remembered one)")
    p.add_argument("--state", help="directory of the state files (default: ~/.relay-chat)")
    p.add_argument(
        "--new-device", action="store_true", help="register a new device (and remember it)"
    )
    p.add_argument("--to", help="the peer's username")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--send", metavar="TEXT", help="send one message, exit when accepted")
    mode.add_argument(
        "--receive", metavar="N", type=int, help="exit after N messages (0: after logging in)"
    )
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    args = p.parse_args()
    if args.send is not None and not args.to:
        p.error("--send needs --to")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    secret = arguments.password or os.environ.get("RELAY_PASSWORD") or getpass.getpass()
    try:
        sys.exit(trio.run(main, arguments, secret))
    except KeyboardInterrupt:
        sys.exit(130)
