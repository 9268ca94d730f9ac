"""Bus port (route events to the process holding a device) and its adapters."""

from __future__ import annotations

from ._local import LocalBus as LocalBus
from ._port import Bus as Bus
from ._port import Sink as Sink
