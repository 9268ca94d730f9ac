"""relay: a Trio-based real-time messaging relay for chat clients."""

from __future__ import annotations

__version__ = "0.1.0"
