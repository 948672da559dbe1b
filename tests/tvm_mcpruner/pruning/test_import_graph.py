"""The pruning package's modules import each other without cycles (and never import TVM)."""

from __future__ import annotations

import ast
from pathlib import Path

import tvm_mcpruner.pruning as pruning

PACKAGE = Path(pruning.__file__).parent


def sibling_imports(path: Path) -> set[str]:
    """The modules of this package that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
    return found & {p.stem for p in PACKAGE.glob("*.py")}


def test_no_module_of_the_pruning_package_imports_itself_back():
    graph = {p.stem: sibling_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    visiting, done = [], set()

    def visit(module: str) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        if module in done:
            return
        visiting.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)
    assert "plan" in graph and not graph["plan"] & {"api", "schedules", "sensitivity"}


def test_the_pruning_package_imports_no_tvm():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n == "tvm" or n.startswith("tvm.") for n in names), f"{path.name} imports {names}"
