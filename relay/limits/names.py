"""The name of every limit, and what its key is. Policies: ``_policies.policies``."""

from __future__ import annotations

# -- token buckets (name: key) ------------------------------------------------
LOGIN = "login"
"""POST /api/login attempts, per client IP."""
REGISTER = "register"
"""POST /api/accounts, per client IP."""
HANDSHAKE = "ws_handshake"
"""WebSocket handshakes, per client IP (also checked at accept, to shed)."""
HANDSHAKE_USER = "ws_handshake_user"
"""WebSocket handshakes, per user, once the token is known."""
SEND = "send"
"""send frames, per device (all its connections and reconnects)."""
SEND_USER = "send_user"
"""send frames, per user (all its devices together)."""
KEYS_FETCH = "keys_fetch"
"""Key-bundle fetches, per requesting device."""
KEYS_FETCH_USER = "keys_fetch_user"
"""Key-bundle fetches, per requesting user (all its devices together)."""
KEYS_TARGET = "keys_target"
"""Key-bundle fetches, per target (``user`` or ``user/device``), everyone together."""
GUARDED_LOGIN = "guarded_login"
"""Login attempts per (username, known source) while the username is guarded."""

# -- places (at most N held at once) -----------------------------------------
CONNECTIONS_USER = "ws_connections_user"
"""WebSocket connections open at once, per user (every process together)."""

# -- failure windows (lockouts) ---------------------------------------------
LOGIN_FAILURES = "login_failures"
"""Failed logins per (username, IP): the lockout an attacker can only put on himself."""
LOGIN_FAILURES_USER = "login_failures_user"
"""Failed logins per username from anywhere: past the ceiling the username is guarded."""
