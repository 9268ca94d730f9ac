"""Spec: `relay --version`, `--help` and usage errors load neither servers nor drivers."""

from __future__ import annotations

import pytest

from tests.conftest import all_modules_after

QUICK = """
import relay.cli
try:
    relay.cli.main({argv!r})
except SystemExit:
    pass
"""

HEAVY = ("relay.app", "relay.store", "relay.http", "quart", "hypercorn", "coredis", "psycopg")


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["migrate", "--help"], ["user", "add", "--help"], ["nope"]]
)
def test_answering_without_a_command_to_run_loads_nothing_heavy(argv: list[str]) -> None:
    """The parser alone answers: none of the modules a command needs is imported."""
    loaded = all_modules_after(QUICK.format(argv=argv))
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)) == []
