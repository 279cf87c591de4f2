"""The package's layers import one way (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "batch_processor"

#: Subpackage -> the subpackages it may import ("core" is every top-level module).
ALLOWED = {
    "cli": {"service", "runtime", "pipeline", "documents", "mongo", "files", "testing",
            "settings", "core"},
    "service": {"runtime", "route", "pipeline", "documents", "mongo", "files", "llm",
                "cascade", "classifiers", "settings", "core"},
    "runtime": {"pipeline", "documents", "mongo", "files", "core"},
    "route": {"documents", "files", "llm", "classifiers", "settings", "core"},
    "pipeline": {"documents", "files", "classifiers", "core"},
    "documents": {"core"},
    "mongo": {"core"},
    "files": {"core"},
    "llm": {"classifiers", "core"},
    "cascade": {"classifiers", "core"},
    "classifiers": {"core"},
    "testing": {"route", "documents", "llm", "cascade", "classifiers", "core"},
    "settings": {"core"},
    "core": {"core"},
}  # fmt: skip


def _modules() -> list[Path]:
    """Every module of the package (a wrong path finds none, and fails here, not silently)."""
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 100, f"no package at {PACKAGE}"
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "core"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batch_processor."):
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("batch_processor.")}
    return found


def test_imports_point_one_way() -> None:
    """No module imports from a layer above its own (lazy imports included)."""
    wrong = []
    for path in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.name in {"__init__.py", "__main__.py"} and len(relative.parts) == 1:
            continue  # the public surface and the entry point import from everywhere
        layer = relative.parts[0] if len(relative.parts) > 1 else "core"
        for module in _imports(path):
            if _layer(module) not in ALLOWED[layer] | {layer}:
                wrong.append(f"{relative}: {module}")
    assert wrong == []


def test_only_mongo_imports_pymongo_and_only_llm_imports_openai() -> None:
    """The drivers stay behind their folders."""
    for path in _modules():
        top = path.relative_to(PACKAGE).parts[0]
        tree = ast.parse(path.read_text())
        names = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        names |= {
            (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
        assert top == "mongo" or not names & {"pymongo", "bson", "motor"}, path
        assert top == "llm" or "openai" not in names, path
