"""Imports run one way: firmware_bridge ← edge ← export, no module cycles, and nothing from the test tree.

Read from the source with ast (imports inside functions count too), so a cycle that only shows at run
time, or a path into tests/, is caught before it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "export", "firmware_bridge")
APPLICATION = ("edge", "export")
"""What the glasses and the workstation tools run: they must not read from tests/."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imported(name: str, path: Path) -> set[str]:
    """Every module name `path` imports, relative imports resolved (a `from m import x` also names m.x)."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])]) if node.level else node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of edge/, export/, firmware_bridge/ (and tests) it imports."""
    sources = _sources()
    graph = {}
    for name, path in sources.items():
        graph[name] = {m for m in _imported(name, path) if m != name and (m in sources or m.split(".")[0] == "tests")}
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, imported in graph.items():
        top = module.split(".")[0]
        out.setdefault(top, set()).update(m.split(".")[0] for m in imported if m.split(".")[0] != top)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge met in a depth-first walk (empty when the graph is acyclic)."""
    found, state = [], {}
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path, state[start] = [start], "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop(), path.pop()
                state[node] = "done"
            elif state.get(child) == "open":
                found.append(path[path.index(child):] + [child])
            elif child not in state:
                state[child] = "open"
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return found


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph()
    assert "edge.vision.upperface" in graph["edge.pipeline"]
    assert "firmware_bridge.link" in graph["edge.hw.bridge"]
    assert "export.card" in graph["export.build"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_packages_import_one_way():
    packages = package_graph(import_graph())
    assert cycles(packages) == [], "a package cycle: move the shared code into the lower package"
    assert "edge" not in packages["firmware_bridge"] and "export" not in packages["edge"]


def test_no_module_cycle():
    assert cycles(import_graph()) == [], "modules that import each other: move what both need into a third"


def test_the_application_reads_nothing_from_the_test_tree():
    graph = import_graph()
    imports = sorted(f"{m} imports {i}" for m, i_s in graph.items() if m.split(".")[0] in APPLICATION
                     for i in i_s if i.split(".")[0] == "tests")
    assert imports == []
    paths = sorted(
        f"{name}:{node.lineno}" for name, path in _sources().items() if name.split(".")[0] in APPLICATION
        for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
        and isinstance(node.value, str) and (node.value == "tests" or node.value.startswith("tests/"))
    )
    assert paths == [], "a path into tests/: ship the file with the package (e.g. edge/speech/voices/)"
