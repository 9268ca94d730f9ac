"""The WebSocket hot path: admission, handshake gate, connections, delivery, frames.

Modules, in the order a socket meets them:

- ``_server``: accepts through :mod:`relay.net`, runs the handshake gate,
  holds a place of this process and one of the user's (the Limits port's
  ``ws_connections_user``: every process together), and owns the registry,
  the pipeline and the heartbeat task.
- ``_gate`` (token, origin, limits), ``_frames`` (the sans-I/O codec).
- ``_connection`` (I/O) over ``_life`` (its sans-I/O state machine),
  ``_outbox`` (what it will write) and ``_heartbeats`` (one timer task).
- ``_pipeline`` (group commit), ``_registry`` (who is connected here; the
  Bus sink), ``_internals`` (every use of trio-websocket's internals).

**A send**, from Alice's device A to Bob::

    A's reader ──decode──▶ send frame ──limits (SEND, SEND_USER)──▶ A's outbox.reserve()
      └──▶ pipeline.submit_send(SendRequest(A's outbox, ...))
    pipeline task: batch ──store.enqueue (one transaction)──▶ for each send:
      ├──▶ A's outbox.answer(accepted | error)      (A's writer sends it)
      └──▶ bus.publish(MessageQueued(Bob's devices, seq, ...))
    bus ──▶ registry.handle(event) in the process holding Bob's device:
      └──▶ B's connection.push_message(seq, frame) ──▶ B's outbox ──▶ B's writer
    B acks ──▶ pipeline.submit_ack ──▶ store.ack_many (one transaction per batch)

Nothing on the way waits for another connection: outboxes never block their
producers (a full one closes its connection with 1013), and the message is
in the store before anyone is told ``accepted``, so a lost push is healed by
the replay on the next connect.

**A revocation** (logout, session or device deletion, refresh reuse)::

    HTTP route ──▶ AuthService.revoke_session ──▶ store (revoked_at)
      ├──▶ limits.revoke(session) (its access tokens are refused from now on)
      └──▶ bus.publish(SessionRevoked(session, reason))
    bus ──▶ registry.handle(event) wherever the session's sockets are
      └──▶ connection.close(4003) ──▶ its scope is cancelled, the socket closed

The bus is attached to the registry once, in ``relay/app.py``.
"""

from __future__ import annotations

from ._connection import Connection as Connection
from ._frames import FrameError as FrameError
from ._frames import decode_frame as decode_frame
from ._gate import HandshakeGate as HandshakeGate
from ._gate import Refusal as Refusal
from ._pipeline import DeliveryPipeline as DeliveryPipeline
from ._registry import ConnectionRegistry as ConnectionRegistry
from ._server import WsServer as WsServer
