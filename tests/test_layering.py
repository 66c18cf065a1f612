"""The project's modules import each other without a cycle (a module that needs another
imports it at the top, no lazy import or ``Any`` works around a loop), and sparse_engine
stays pure ML: no gRPC, MLflow, server, client or wire code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sparse_engine", "server", "client", "sparsecl")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, by absolute name."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    paths = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "_pb2" not in p.name]
    # a package's __init__ re-exports its modules (``from . import x`` names it too): not a link
    modules = {module_name(p): p for p in paths if p.name != "__init__.py"}
    return {m: {d for d in imports(p) if d in modules and d != m} for m, p in modules.items()}


def test_no_module_imports_itself_through_others() -> None:
    edges = graph()
    loops = []
    for start in edges:
        seen: set[str] = set()
        stack = list(edges[start])
        while stack:
            module = stack.pop()
            if module == start:
                loops.append(start)
                break
            if module not in seen:
                seen.add(module)
                stack.extend(edges.get(module, ()))
    assert loops == []


@pytest.mark.parametrize(
    "path", sorted((ROOT / "sparse_engine").rglob("*.py")), ids=lambda p: p.name
)
def test_sparse_engine_imports_no_transport_or_store(path: Path) -> None:
    roots = {m.split(".")[0] for m in imports(path)}
    assert not roots & {"grpc", "mlflow", "server", "client", "sparsecl"}
