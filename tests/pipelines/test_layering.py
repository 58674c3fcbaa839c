"""One-way layering, read from the source (ast), not from what happens to be imported at run time.

    pipelines  ->  assets (areas)  ->  assets.resources  ->  aegis (the core)

- ``aegis`` (the core) imports neither Dagster nor ``assets`` nor ``pipelines``: it is
  tested, run and reused without the orchestrator.
- ``assets`` never imports ``pipelines``: an area does not know which profile or
  code location assembles it (``pipelines.definitions`` merges the areas' ``defs``).
- ``assets.resources`` imports only the core and libraries, never an area, so any
  area (and ``pipelines.profiles``) can use a resource without a cycle.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``,
relative, and ``importlib.import_module`` / ``__import__`` with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = "dagster"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted and absolute
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """``from <level dots><name> import ...`` inside ``module``, made absolute."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, *([name] if name else [])])


def imports_in(root: Path, path: Path) -> list[Import]:
    """Every module ``path`` imports (for ``from a import b``: ``a`` and ``a.b``, b may be a module)."""
    module = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        found.append(Import(module, target, f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module) if node.level else node.module or ""
            add(base, node)
            for alias in node.names:
                if alias.name != "*":
                    add(f"{base}.{alias.name}" if base else alias.name, node)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                add(node.args[0].value, node)
    return found


def package_imports(root: Path, package: str) -> list[Import]:
    files = sorted((root / package).rglob("*.py"))
    return [imp for f in files if "__pycache__" not in f.parts for imp in imports_in(root, f)]


def _within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def _is_dagster(target: str) -> bool:
    top = target.split(".", 1)[0]
    return top == DAGSTER or top.startswith(DAGSTER + "_")


def layering_violations(root: Path) -> list[str]:
    """Every import that breaks the one-way layering, as ``path:line: module imports target``."""
    bad: list[Import] = []
    for imp in package_imports(root, "aegis"):
        if _within(imp.target, "assets") or _within(imp.target, "pipelines") or _is_dagster(imp.target):
            bad.append(imp)
    for imp in package_imports(root, "assets"):
        if _within(imp.target, "pipelines") or (
            _within(imp.module, "assets.resources")
            and (imp.target.startswith("assets.") and not _within(imp.target, "assets.resources"))
        ):
            bad.append(imp)
    return sorted({str(b) for b in bad})


def test_the_layering_is_one_way() -> None:
    violations = layering_violations(ROOT)
    assert not violations, "imports against the layering (see this module's docstring):\n" + "\n".join(
        violations
    )


def test_the_walker_reads_the_real_graph() -> None:
    """The rules above are only as good as the walk: it must see the edges the layout is made of."""
    edges = {(i.module, i.target) for p in ("aegis", "assets", "pipelines") for i in package_imports(ROOT, p)}
    assert ("pipelines.definitions", "assets.telemetry") in edges
    assert ("pipelines.profiles", "assets.resources.lake") in edges
    assert ("assets.telemetry", "assets.resources.lake") in edges
    assert ("assets.resources.lake", "aegis.config") in edges
    assert ("assets.healing", "aegis.healing.engine") in edges  # an import inside a function body
    modules = {i.module for i in package_imports(ROOT, "aegis")}
    assert len(modules) > 50  # the whole core is walked, not a corner of it


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    files = {
        "aegis/__init__.py": "",
        "aegis/ok.py": "import json\nfrom aegis import config\n",
        "aegis/lazy.py": "def f():\n    import dagster_dbt\n",
        "aegis/typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from assets import x\n",
        "aegis/dynamic.py": "import importlib\nimportlib.import_module('pipelines.cli')\n",
        "assets/__init__.py": "",
        "assets/area.py": "from assets.resources.lake import L\n",
        "assets/wired.py": "from pipelines.profiles import resources_for\n",
        "assets/resources/__init__.py": "",
        "assets/resources/lake.py": "from aegis.config import AegisPaths\nfrom .. import area\n",
        "assets/resources/game.py": "from assets.resources import lake\n",
        "pipelines/__init__.py": "",
        "pipelines/definitions.py": "from assets import area\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_the_walker_catches_every_kind_of_import(bad_tree: Path) -> None:
    found = layering_violations(bad_tree)
    assert found == [
        "aegis/dynamic.py:2: aegis.dynamic imports pipelines.cli",
        "aegis/lazy.py:2: aegis.lazy imports dagster_dbt",
        "aegis/typing_only.py:3: aegis.typing_only imports assets",
        "aegis/typing_only.py:3: aegis.typing_only imports assets.x",
        "assets/resources/lake.py:2: assets.resources.lake imports assets.area",
        "assets/wired.py:1: assets.wired imports pipelines.profiles",
        "assets/wired.py:1: assets.wired imports pipelines.profiles.resources_for",
    ]
