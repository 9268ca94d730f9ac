"""The HTTP API: a Quart-Trio app on Hypercorn."""

from __future__ import annotations

from ._admin import LiveView as LiveView
from ._app import create_app as create_app
from ._server import serve_admin as serve_admin
from ._server import serve_http as serve_http
