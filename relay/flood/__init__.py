"""``relay flood``: a bounded load tester for a relay you operate (loopback by default).

Three modes, each an async entry point on Trio that returns its figures:
:func:`run_handshake`, :func:`run_messages`, :func:`run_idle`. The command
line (:func:`add_parser`, :func:`main`) wraps them with a live progress line,
final tables and an optional JSON report. See ``docs/flood.md``.
"""

from __future__ import annotations

from ._cli import add_parser as add_parser
from ._cli import main as main
from ._common import MAX_SECONDS as MAX_SECONDS
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
