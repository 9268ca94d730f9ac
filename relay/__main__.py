"""``python -m relay``: the same as the ``relay`` console script."""

from __future__ import annotations

import sys

try:
    from .cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before a command's own handling (e.g. while importing)
    print("relay: interrupted; nothing changed", file=sys.stderr)
    code = 130
sys.exit(code)
