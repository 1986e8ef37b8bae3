"""The shape of the code base (issue 20), read from the source with `ast`: no import circle
between the project's modules (imports inside functions and under TYPE_CHECKING count), a
contract that imports no application library and no torch, and no class defined twice."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "indexing", "model", "service", "training")
APPLICATION = {"typer", "rich", "ray", "fastapi", "starlette", "uvicorn", "torch", "prometheus_client"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """Every module that `name` imports anywhere in its file, resolved to absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


def project_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: {m for m in imported(name, path) if m in found and m != name} for name, path in found.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_between_the_projects_modules():
    graph = project_graph()
    # packages import their own __init__ implicitly; a module importing its own package is no circle
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    assert "indexing.indexer" in graph and graph["indexing.ray_atomize"]  # the graph is really read
    assert cycle(graph) is None, " -> ".join(cycle(graph))


@pytest.mark.parametrize("path", sorted((ROOT / "contract").rglob("*.py")), ids=lambda p: p.name)
def test_the_contract_imports_no_application_library_and_no_torch(path):
    roots = {name.split(".")[0] for name in imported("contract." + path.stem, path)}
    assert not roots & APPLICATION, f"{path.name} imports {sorted(roots & APPLICATION)}"
    assert not roots & {"service", "indexing", "training", "model"}, f"{path.name} imports an application package"


def test_no_class_name_is_defined_twice():
    names = Counter(node.name for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ClassDef))
    assert names["Bank"] == 1 and names["ModelRunner"] == 1
    assert [name for name, count in names.items() if count > 1] == []


def test_padding_and_bank_writing_are_defined_once():
    functions = Counter(node.name for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, ast.FunctionDef))
    assert functions["pad"] == 1 and functions["build_bank"] == 0 and functions["_pad"] == 0
