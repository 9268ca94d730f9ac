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


_KEY_AND_DEFAULT = re.compile(r"`([a-z_]+)\.([a-z_]+)`[ ,]*\(([^)]*)\)")
_UNITS = {
    "ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "days": 86_400.0, "day": 86_400.0,
    "KiB": 1024.0, "MiB": 1024.0**2,
}
_NUMBER = re.compile(r"^(\d[\d ,]*(?:\.\d+)?)\s*([A-Za-z]*)\s*(?:$|[;,]|\s)")


def _stated_value(text: str) -> float | None:
    """The number a doc states, in the config's units (seconds, bytes); None if it is prose."""
    match = _NUMBER.match(text.strip())
    if match is None:
        return None
    number = float(match.group(1).replace(",", "").replace(" ", ""))
    unit = match.group(2)
    if unit and unit not in _UNITS:
        return None
    return number * _UNITS.get(unit, 1.0)


def test_every_default_stated_in_the_docs_is_the_codes() -> None:
    """`section.key` (value) in any doc, README included, matches the config's default."""
    from relay.config import Config

    defaults = Config()
    wrong: list[str] = []
    checked = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for section, key, text in _KEY_AND_DEFAULT.findall(doc.read_text()):
            struct = getattr(defaults, section, None)
            if struct is None or not hasattr(struct, key):
                continue
            default = getattr(struct, key)
            stated = _stated_value(text)
            if stated is None or isinstance(default, (str, tuple)) or default is None:
                continue
            checked += 1
            if abs(float(default) - stated) > 1e-9:
                wrong.append(f"{doc.name}: {section}.{key} ({text}) but the default is {default}")
    assert wrong == []
    assert checked >= 20  # the check itself finds what it checks
