"""The package's layers import downward only (README "Layout"): a module may import its own layer and the
layers listed before it, never one after it. The private helpers at the package root sit below every layer;
the package itself (``facecraft``, which holds only ``__version__``) may be imported from anywhere."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import facecraft

LAYERS = ["data", "models", "attacks", "defenses", "metrics", "experiments", "cli"]
ROOT = Path(facecraft.__file__).parent


def _layer(module: str) -> int:
    """Rank of ``facecraft.<first>...``: -1 for the root helpers (``_io``, ``_torchutils``, ...)."""
    first = module.split(".")[1] if "." in module else ""
    return LAYERS.index(first) if first in LAYERS else -1


def _imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every ``facecraft.*`` module imported anywhere in ``path`` (function-local imports included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        yield from (
            (n, node.lineno) for n in names if n == "facecraft" or n.startswith("facecraft.")
        )


def upward_imports(root: Path = ROOT) -> List[str]:
    """``file:line imports module`` for each import of a later layer."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        module = "facecraft." + ".".join(rel.with_suffix("").parts)
        mine = _layer(module)
        for name, line in _imports(path):
            if _layer(name) > mine:
                found.append(f"{rel}:{line} imports {name}")
    return found


def test_no_module_imports_a_later_layer() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text(
        "def f():\n    from facecraft.experiments.config import RunConfig\n"
    )
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "good.py").write_text("from facecraft.data.bad import f\n")
    assert upward_imports(tmp_path) == ["data/bad.py:2 imports facecraft.experiments.config"]
