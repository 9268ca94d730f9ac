"""Sockets at the edge, shared by both servers: admission at accept, listeners."""

from __future__ import annotations

from ._accept import peer_ip as peer_ip
from ._accept import serve_admitted as serve_admitted
from ._admission import Admission as Admission
from ._admission import ShedCheck as ShedCheck
from ._admission import Ticket as Ticket
from ._admission import Turnaway as Turnaway
from ._admission import canned_response as canned_response
from ._listen import PortInUse as PortInUse
from ._listen import open_listeners as open_listeners
from ._slots import ConnectionSlots as ConnectionSlots
from ._slots import Full as Full
from ._source import source_of as source_of
