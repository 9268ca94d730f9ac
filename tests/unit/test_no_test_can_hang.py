"""The suite's own guard: a Trio test that hangs is failed, and the run goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HANGING = '''
import trio

async def test_hangs_forever():
    await trio.sleep_forever()

async def test_runs_after_the_hang():
    await trio.sleep(0)
'''


def test_a_hanging_trio_test_fails_after_the_deadline(tmp_path: Path) -> None:
    """A test stuck for ever is cancelled after RELAY_TEST_TIMEOUT and reported failed."""
    (tmp_path / "test_hang.py").write_text(HANGING)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
            "-o", "trio_mode=true", "-o", "timeout=60", "-q", "-n", "0",  # one process
            str(tmp_path / "test_hang.py"),
        ],
        cwd=root,
        env={**os.environ, "RELAY_TEST_TIMEOUT": "1"},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "timed out after 1 s of real time" in result.stdout
