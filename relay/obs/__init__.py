"""Structured logging, request ids, security events and metrics."""

from __future__ import annotations

from ._logging import Logger as Logger
from ._logging import configure_logging as configure_logging
from ._logging import get_logger as get_logger
from ._metrics import CONTENT_TYPE as CONTENT_TYPE
from ._metrics import Metrics as Metrics
from ._request_id import request_id_from as request_id_from
from ._sampler import LogSampler as LogSampler
