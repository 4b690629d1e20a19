"""The package's layers import downward only (README "Layout"): a module may import its own layer
and the layers listed before it, never one after it. The private helpers at the package root sit
below every layer; the package itself (``facecraft``, which holds only ``__version__``) may be
imported from anywhere."""

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
    """Every ``facecraft.*`` module imported anywhere in ``path`` (function-local imports
    included)."""
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


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(("facecraft",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def _module_imports(path: Path) -> Iterator[str]:
    """``facecraft.*`` modules (or names in them) that ``path`` imports anywhere, function-local
    imports included: deferring an import hides a cycle, it does not remove it."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        yield from (n for n in names if n.startswith("facecraft."))


def import_cycles(root: Path = ROOT) -> List[List[str]]:
    """Cycles among the modules under ``root`` through their imports."""
    modules = {_module_name(root, p): p for p in root.rglob("*.py")}
    graph = {
        m: sorted({n for n in _module_imports(p) if n in modules} - {m}) for m, p in modules.items()
    }
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m], _ = "open", stack.append(m)
        for n in graph[m]:
            if state.get(n) == "open" and not _is_package_of(n, m):
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        state[m], _ = "done", stack.pop()

    for m in sorted(modules):
        if m not in state:
            visit(m)
    return cycles


def _is_package_of(package: str, module: str) -> bool:
    """A package's ``__init__`` re-exporting its submodules, which import siblings through the
    package path, is how Python packages work, not a cycle between layers of code."""
    return module.startswith(package + ".")


def test_no_import_cycle() -> None:
    assert import_cycles() == []


def test_the_check_sees_an_import_cycle(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "a.py").write_text("from facecraft.experiments.b import g\n")
    (tmp_path / "experiments" / "b.py").write_text(
        "import os\nfrom facecraft.experiments.a import f\n"
    )
    assert import_cycles(tmp_path) == [
        ["facecraft.experiments.a", "facecraft.experiments.b", "facecraft.experiments.a"]
    ]


#: functions over the size goal, each with its reason (issue 19)
LONG_FUNCTIONS = {
    # a Typer command whose option declarations alone are 40 lines; its body is about 45
    "cli/bench.py:bench_craft_cmd",
}


def _code_lines(node: ast.AST, lines: List[str]) -> int:
    """Lines of ``node`` less its docstring, blank lines and comments."""
    body = getattr(node, "body", [])
    doc = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
    ):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for i in range(node.lineno, node.end_lineno + 1)
        if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def test_modules_and_functions_stay_small() -> None:
    """No module over 400 lines; no function over 60 lines of code unless named above."""
    big, long = [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > 400:
            big.append(f"{rel}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > 60 and f"{rel}:{node.name}" not in LONG_FUNCTIONS:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert big == [] and long == []
