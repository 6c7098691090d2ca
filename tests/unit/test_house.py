"""The shape of the house, checked from farm's source: small modules and small classes (issue 18; one meaning per
class name and the import rules are tests/unit/test_layers.py's). A change that breaks a rule is a design change:
make it here on purpose."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import typing
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


# The contracts (docs/contracts.md): their dataclasses are what crosses a boundary, so every field is typed. A
# contract cannot reach outside these modules unseen: every dataclass a contract field names must live in one
# (test_contracts_stay_in_their_modules).
CONTRACT_MODULES = (
    "farm/job/types.py",
    "farm/job/report.py",
    "farm/job/spec.py",
    "farm/job/tunecontract.py",
)


def is_dataclass(cls: ast.ClassDef) -> bool:
    def name(node: ast.expr) -> str:
        target = node.func if isinstance(node, ast.Call) else node
        return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")

    return any(name(decorator) == "dataclass" for decorator in cls.decorator_list)


def any_fields(tree: ast.Module) -> Iterator[tuple[ast.ClassDef, ast.AnnAssign]]:
    """Fields of the module's dataclasses whose annotation mentions ``Any`` (bare, or inside Mapping[str, Any] etc.)."""
    for cls in classes(tree):
        if not is_dataclass(cls):
            continue
        for statement in cls.body:
            if not isinstance(statement, ast.AnnAssign):
                continue
            annotation = statement.annotation
            text = annotation.value if isinstance(annotation, ast.Constant) else ast.unparse(annotation)
            names = {n.id for n in ast.walk(ast.parse(str(text), mode="eval")) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(ast.parse(str(text), mode="eval")) if isinstance(n, ast.Attribute)}
            if "Any" in names and "ClassVar" not in names:
                yield cls, statement


def contract_modules() -> Iterator[tuple[Path, ast.Module]]:
    for path, tree in modules():
        if str(path.relative_to(PACKAGE.parent)) in CONTRACT_MODULES:
            yield path, tree


def test_no_contract_dataclass_has_a_field_typed_any() -> None:
    missing = [name for name in CONTRACT_MODULES if not (PACKAGE.parent / name).is_file()]
    assert not missing, f"CONTRACT_MODULES names modules that are gone; list where the contracts live now: {missing}"
    found = [
        f"{where(path, statement)} {cls.name}.{ast.unparse(statement.target)}: {ast.unparse(statement.annotation)}"
        for path, tree in contract_modules()
        for cls, statement in any_fields(tree)
    ]
    assert not found, f"a contract's field says what it holds; give nested records their own dataclass: {found}"


def test_the_contract_rule_sees_a_breach() -> None:
    tree = ast.parse(
        "@dataclass(frozen=True)\nclass Entry:\n    name: str\n    extra: Mapping[str, Any] | None = None\n"
        "    KIND: ClassVar[Any] = None\n"
        "class Plain:\n    loose: Any\n"
    )
    assert [(cls.name, ast.unparse(field.target)) for cls, field in any_fields(tree)] == [("Entry", "extra")]


def test_contracts_stay_in_their_modules() -> None:
    """Every dataclass that a contract's fields name, however deep, is defined in a contract module, so the rule
    above sees all of a contract."""
    names = [name.removesuffix(".py").replace("/", ".") for name in CONTRACT_MODULES]
    roots = [
        value
        for module in map(importlib.import_module, names)
        for value in vars(module).values()
        if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module.__name__
    ]
    seen: set[type] = set()
    pending = list(roots)
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for hint in typing.get_type_hints(cls).values():
            pending.extend(nested_dataclasses(hint))
    outside = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in seen if cls.__module__ not in names)
    assert roots and not outside, f"contract records outside CONTRACT_MODULES: move them there or list: {outside}"


def nested_dataclasses(hint: object) -> Iterator[type]:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        yield hint
    for argument in typing.get_args(hint):
        yield from nested_dataclasses(argument)
