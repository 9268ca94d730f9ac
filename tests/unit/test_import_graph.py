"""The seams of the house (ADR 0006), read from the source: who may import whom.

HTTP and WebSocket meet only in the services they share; crypto is pure
(nothing from the store or the servers); and no module of relay/ imports,
through others, itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

RELAY = Path(__file__).resolve().parents[2] / "relay"


def _module(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the relay modules it imports (type-checking and function imports too)."""
    graph: dict[str, set[str]] = {}
    for path in RELAY.rglob("*.py"):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                target = (
                    f"{base}.{node.module}" if node.level and node.module else node.module or base
                )
                if node.level and not node.module:  # from . import x
                    found.update(f"{base}.{alias.name}" for alias in node.names)
                found.add(target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m == "relay" or m.startswith("relay.")}
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges_between(source: str, target: str) -> list[tuple[str, str]]:
    return [
        (m, t)
        for m, targets in _imports().items()
        if _in(m, source)
        for t in targets
        if _in(t, target)
    ]


def test_http_never_imports_the_websocket_package() -> None:
    assert _edges_between("relay.http", "relay.ws") == []


def test_the_websocket_package_never_imports_http() -> None:
    assert _edges_between("relay.ws", "relay.http") == []


def test_crypto_imports_nothing_from_the_store_or_the_servers() -> None:
    for other in ("relay.store", "relay.http", "relay.ws"):
        assert _edges_between("relay.crypto", other) == []


def test_no_module_imports_itself_through_others() -> None:
    """No cycle between modules (a package's __init__ re-exporting its own parts is not one)."""
    graph = _imports()

    def parents(module: str) -> set[str]:
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    edges = {
        m: {t for t in targets if t in graph and t != m and t not in parents(m)}
        for m, targets in graph.items()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend([*path, node, nxt])
                return True
            if nxt not in state and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for start in sorted(edges):
        if start not in state and visit(start, []):
            break
    assert cycle == []
