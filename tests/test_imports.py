"""Every module imports only public names of another, and no two modules import each other.

Read from the source with :mod:`ast` (nothing is imported): every ``import``
and ``from ... import`` of a ``gridwatch`` module counts, at module level or
inside a function (a lazy import that holds a cycle together is still a
cycle), and so does ``module._name`` on a name bound to a gridwatch module.
Dunder names (``__version__``) are public. Issue 15, item 1.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gridwatch"

ALLOWED_PRIVATE = {
    # Still to clean (issue 15 item 1): the InfluxDB v2 client reuses the v1 client's retry
    # marker. Shrink, never grow.
    ("gridwatch.influx.client_v2", "gridwatch.influx.client._Retryable"),
}
"""(importing module, imported private name) pairs not cleaned yet."""

ALLOWED_CYCLES = set()
"""Import cycles (as the set of their modules) not broken yet. Shrink, never grow."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """``(imported module, name or None)`` for every gridwatch import in ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound = {}  # local name -> gridwatch module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gridwatch":
                    found.append((alias.name, None))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            if base.split(".")[0] != "gridwatch":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:  # a submodule
                    found.append((full, None))
                    bound[alias.asname or alias.name] = full
                else:
                    found.append((base, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in bound:
            found.append((bound[node.value.id], node.attr))
    return found


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__")
                                                          and name.endswith("__"))


def _private_imports() -> set:
    out = set()
    for module, path in MODULES.items():
        for target, name in _imports(module, path):
            if target != module and _private(name):
                out.add((module, f"{target}.{name}"))
    return out


def _graph() -> dict[str, set]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _ in _imports(module, path):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set]) -> list[frozenset]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_package():
    assert {"gridwatch.pipeline", "gridwatch.runner", "gridwatch.sources.files"} <= set(MODULES)
    graph = _graph()
    assert "gridwatch.runner" in graph["gridwatch.pipeline"]
    assert "gridwatch.sources.files" in graph["gridwatch.sources.partitioned"]


def test_no_module_imports_a_private_name_of_another():
    found = _private_imports()
    new = sorted(found - ALLOWED_PRIVATE)
    assert not new, "private names imported across modules (make them public): " + \
        ", ".join(f"{m} -> {n}" for m, n in new)
    cleaned = sorted(ALLOWED_PRIVATE - found)
    assert not cleaned, f"no longer imported: remove from ALLOWED_PRIVATE: {cleaned}"


def test_no_import_cycle():
    cycles = set(_cycles(_graph()))
    new = [sorted(c) for c in cycles if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert not new, f"import cycles: {new}"
    shrunk = [sorted(c) for c in ALLOWED_CYCLES if c not in cycles]
    assert not shrunk, f"smaller or gone: update ALLOWED_CYCLES: {shrunk}"


@pytest.mark.parametrize("source, message", [
    pytest.param("from gridwatch.sources.files import _read\n", "gridwatch.sources.files._read",
                 id="from-import"),
    pytest.param("from gridwatch.sources import files\nfiles._ids(x)\n",
                 "gridwatch.sources.files._ids", id="attribute"),
])
def test_the_scan_finds_a_private_import(tmp_path, source, message):
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = {f"{t}.{n}" for t, n in _imports("gridwatch.probe", path) if _private(n)}
    assert message in found


def test_the_scan_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]
