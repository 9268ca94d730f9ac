"""The docs' claims that can be checked against the code are checked here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def test_every_test_named_in_security_md_exists() -> None:
    """docs/security.md names the tests that prove each defence: each must exist."""
    text = (ROOT / "docs" / "security.md").read_text()
    missing: list[str] = []
    current: Path | None = None
    for path, name in re.findall(r"`([\w/]*\.py)?(?:::(\w+))?`", text):
        if path:
            matches = [p for p in TESTS.rglob(Path(path).name) if str(p).endswith(path)]
            if len(matches) != 1:
                missing.append(path)
                continue
            current = matches[0]
        if name:
            assert current is not None, name
            if not re.search(rf"def {name}\b", current.read_text()):
                missing.append(f"{current.relative_to(TESTS)}::{name}")
    assert missing == []
