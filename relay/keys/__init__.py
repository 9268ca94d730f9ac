"""Device keys for X3DH: the service over the ports, and its pure rules."""

from __future__ import annotations

from ._rules import low_on_prekeys as low_on_prekeys
from ._rules import target_key as target_key
from ._service import Fetched as Fetched
from ._service import KeyService as KeyService
