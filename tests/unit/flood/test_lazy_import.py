"""Spec: ``relay serve`` does not load the load tester; ``relay flood`` still works."""

from __future__ import annotations

import pytest

from relay.cli import main
from tests.conftest import all_modules_after, modules_after

SERVE_PATH = """
import relay.cli
try:
    relay.cli.main(["serve", "--help"])  # builds the whole parser, parses a serve line
except SystemExit:
    pass
"""


def test_relay_serve_does_not_import_relay_flood() -> None:
    """Importing relay.cli and parsing a serve command line loads no flood code."""
    assert modules_after(SERVE_PATH, "relay.flood") == set()


def test_relay_serve_imports_no_rich_beyond_what_structlog_does() -> None:
    """relay adds no rich module of its own to relay serve's imports.

    structlog imports rich (for its console tracebacks) whenever rich is
    installed, so the bar is what ``import structlog`` alone loads.
    """
    assert modules_after(SERVE_PATH, "rich") <= modules_after("import structlog", "rich")


def test_relay_flood_help_still_lists_the_modes(capsys: pytest.CaptureFixture[str]) -> None:
    """``relay flood --help`` is answered by flood's own parser."""
    with pytest.raises(SystemExit) as caught:
        main(["flood", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "usage: relay flood" in out
    for mode in ("handshake", "messages", "idle"):
        assert mode in out


def test_relay_help_lists_flood(capsys: pytest.CaptureFixture[str]) -> None:
    """``relay --help`` still shows the flood command."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "flood" in capsys.readouterr().out


def test_a_flood_submodule_alone_does_not_load_the_others() -> None:
    """Importing one part of relay.flood (its parser) does not import the modes."""
    loaded = modules_after("import relay.flood._args", "relay.flood")
    assert loaded == {"relay.flood", "relay.flood._args"}


def test_a_generator_process_loads_neither_trio_nor_rich() -> None:
    """The handshake generator's worker process starts on the standard library alone."""
    top_level = {m.split(".")[0] for m in all_modules_after("import relay.flood._worker")}
    assert not top_level & {"trio", "rich", "h11", "trio_websocket", "msgspec"}
