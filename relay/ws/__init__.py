"""The WebSocket hot path: handshake gate, connections, routing, frames."""

from __future__ import annotations

from ._connection import Connection as Connection
from ._frames import FrameError as FrameError
from ._frames import decode_frame as decode_frame
from ._frames import prekeys_low_frame as prekeys_low_frame
from ._gate import HandshakeGate as HandshakeGate
from ._gate import Refusal as Refusal
from ._pipeline import DeliveryPipeline as DeliveryPipeline
from ._registry import ConnectionRegistry as ConnectionRegistry
from ._server import WsServer as WsServer
