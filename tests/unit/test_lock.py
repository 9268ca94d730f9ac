"""requirements.lock pins every dependency, within pyproject's bounds, and is what installs use."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(spec) for spec in names]


def test_every_dependency_is_pinned_within_its_bounds() -> None:
    """Each runtime and test dependency has an exact version in the lock that pyproject allows."""
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert pins[name] in requirement.specifier, (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside {requirement}"
        )


def test_the_libraries_whose_internals_relay_uses_have_an_upper_bound() -> None:
    """trio-websocket, hypercorn and coredis: a new minor version needs a look first."""
    bounded = {canonicalize_name(r.name): r.specifier for r in declared()}
    for name in ("trio-websocket", "hypercorn", "coredis"):
        assert any(spec.operator == "<" for spec in bounded[name]), name


def test_ci_and_the_readme_install_with_the_lock() -> None:
    """The install commands of .ci/run and the README use -c requirements.lock."""
    assert "-c requirements.lock" in (ROOT / ".ci" / "run").read_text()
    assert "-c requirements.lock" in (ROOT / "README.md").read_text()
