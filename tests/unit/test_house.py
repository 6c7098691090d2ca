"""The shape of the house, checked from farm's source: small modules and small classes (issue 18; one meaning per
class name and the import rules are tests/unit/test_layers.py's). A change that breaks a rule is a design change:
make it here on purpose."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "farm"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def classes(tree: ast.Module) -> Iterator[ast.ClassDef]:
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef))


def where(path: Path, node: ast.AST | None = None) -> str:
    line = f":{node.lineno}" if isinstance(node, ast.stmt) else ""
    return f"{path.relative_to(PACKAGE.parent)}{line}"


def test_no_module_over_600_lines_and_no_class_over_300() -> None:
    long_modules, long_classes = [], []
    for path, tree in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{where(path)} ({lines} lines)")
        for cls in classes(tree):
            size = (cls.end_lineno or cls.lineno) - cls.lineno + 1
            if size > MAX_CLASS_LINES:
                long_classes.append(f"{where(path, cls)} {cls.name} ({size} lines)")
    assert not long_modules, f"split these modules by job (at most {MAX_MODULE_LINES} lines): {long_modules}"
    assert not long_classes, f"split these classes (at most {MAX_CLASS_LINES} lines): {long_classes}"


def test_the_rules_see_a_breach() -> None:
    """The scan above finds what it looks for: a class built over the limit."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    tree = ast.parse(f"def outer():\n  class Big:\n{body}\n")
    (found,) = classes(tree)
    assert (found.end_lineno or 0) - found.lineno + 1 > MAX_CLASS_LINES
