"""``relay flood``: a bounded load tester for a relay you operate (loopback by default).

Three modes, each an async entry point on Trio that returns its figures:
:func:`run_handshake`, :func:`run_messages`, :func:`run_idle`. The command
line (``relay flood …``, :mod:`relay.flood._cli`) wraps them with a live
progress line, final tables and an optional JSON report. See ``docs/flood.md``.

The names below are imported on first use (PEP 562), so importing one
submodule (say, the handshake generator's worker process) does not load
the others, nor ``rich`` or ``trio_websocket``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._args import MAX_SECONDS as MAX_SECONDS
    from ._common import FloodError as FloodError
    from ._common import TargetUnreachable as TargetUnreachable
    from ._handshake import HandshakeOptions as HandshakeOptions
    from ._handshake import HandshakeResult as HandshakeResult
    from ._handshake import run_handshake as run_handshake
    from ._idle import IdleOptions as IdleOptions
    from ._idle import IdleResult as IdleResult
    from ._idle import run_idle as run_idle
    from ._messages import MessagesOptions as MessagesOptions
    from ._messages import MessagesResult as MessagesResult
    from ._messages import run_messages as run_messages
    from ._target import Endpoint as Endpoint
    from ._target import UnsafeTarget as UnsafeTarget
    from ._target import check_target as check_target
    from ._target import parse_endpoint as parse_endpoint

_EXPORTS = {
    "MAX_SECONDS": "._args",
    "FloodError": "._common",
    "TargetUnreachable": "._common",
    "HandshakeOptions": "._handshake",
    "HandshakeResult": "._handshake",
    "run_handshake": "._handshake",
    "IdleOptions": "._idle",
    "IdleResult": "._idle",
    "run_idle": "._idle",
    "MessagesOptions": "._messages",
    "MessagesResult": "._messages",
    "run_messages": "._messages",
    "Endpoint": "._target",
    "UnsafeTarget": "._target",
    "check_target": "._target",
    "parse_endpoint": "._target",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines *name* on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
