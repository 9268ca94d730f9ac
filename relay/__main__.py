"""``python -m relay``: the same as the ``relay`` console script."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
