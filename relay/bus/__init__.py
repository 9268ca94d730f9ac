"""Bus port (route events to the process holding a device), its events and adapters
(in-process, and Redis pub/sub for several processes)."""

from __future__ import annotations

from ._events import Event as Event
from ._events import MessageQueued as MessageQueued
from ._events import PrekeysLow as PrekeysLow
from ._events import Resync as Resync
from ._events import SessionRevoked as SessionRevoked
from ._local import LocalBus as LocalBus
from ._port import Bus as Bus
from ._port import Sink as Sink
from ._redis import RedisBus as RedisBus
from ._redis import open_redis_bus as open_redis_bus
