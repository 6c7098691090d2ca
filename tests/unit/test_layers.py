"""The rules the folders imply (README "Architecture"), checked twice: by what a fresh interpreter loads, which
catches an import hidden in a function or made by a dependency, and by every import statement in the source,
which catches one on a path the fresh import does not take.

- ``farm report`` and ``farm gate`` only read JSON: importing ``farm.report`` and ``farm.gate`` loads no onnx.
- The job runs inside the container, where the controller is not: nothing under ``farm/job/`` imports it.
- The report is below the gate: ``farm/report/`` imports nothing of ``farm/gate/``.
- Only ``farm/backend/`` talks to Docker: nothing outside it imports the Docker SDK.
- The folders follow the data flow (targets -> host -> images -> backend -> model and inputs -> report -> gate ->
  controller -> cli): a folder imports nothing of a folder after it. ``farm/job/`` and ``farm/errors.py`` sit
  beside them all (the job imports none of them; all may import the job's standard-library contracts).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

FARM = ROOT / "farm"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, *, package: bool = False) -> Iterator[tuple[int, str]]:
    """Every module an import statement anywhere in ``source`` (the module ``module``) names, with its line:
    ``from a.b import c`` names ``a.b`` and ``a.b.c``, as ``c`` may be a module; relative imports resolved."""
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    return imported(path.read_text(encoding="utf-8"), module_name(path), package=path.name == "__init__.py")


def sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(files: list[Path], forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imports_of(path)
        if within(name, forbidden)
    ]


def loaded_after(*modules: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    names: list[str] = json.loads(result.stdout.splitlines()[-1])
    return names


def test_the_scan_resolves_what_each_kind_of_import_names() -> None:
    source = (
        "import docker.errors\nfrom . import svg\nfrom ..gate import rules\n"
        "def f():\n    from farm.gate.policy import Policy\n"
    )
    names = [name for _, name in imported(source, "farm.report.html")]
    assert names == [
        "docker.errors",
        "farm.report",
        "farm.report.svg",
        "farm.gate",
        "farm.gate.rules",
        "farm.gate.policy",
        "farm.gate.policy.Policy",
    ]
    assert [name for _, name in imported("from . import model\n", "farm.report", package=True)] == [
        "farm.report",
        "farm.report.model",
    ]


def test_the_report_and_the_gate_load_no_onnx() -> None:
    loaded = loaded_after("farm.report", "farm.gate", "farm.gate.trend")
    assert "farm.report" in loaded and "farm.gate.trend" in loaded
    heavy = [name for name in loaded if within(name, "onnx") or within(name, "onnxruntime")]
    assert not heavy, f"importing farm.report and farm.gate loaded {heavy[:10]}"


def test_nothing_under_job_imports_the_controller() -> None:
    files = sources(FARM / "job")
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imports_of(path)
        if within(name, "farm") and name != "farm" and not within(name, "farm.job")
    ]
    assert not found, "the job runs where the controller is not; move what it needs under farm/job/: " + "; ".join(
        found
    )
    loaded = loaded_after(*(module_name(path) for path in files if path.name != "__main__.py"))
    controller = [n for n in loaded if within(n, "farm") and n != "farm" and not within(n, "farm.job")]
    assert not controller, f"importing farm/job loaded {controller}"


def test_the_report_imports_nothing_of_the_gate() -> None:
    files = sources(FARM / "report")
    found = violations(files, "farm.gate")
    assert not found, "the gate reads the report, not the other way round: " + "; ".join(found)
    loaded = loaded_after(*(module_name(path) for path in files))
    assert not [n for n in loaded if within(n, "farm.gate")]


def test_only_the_backend_imports_the_docker_sdk() -> None:
    files = [path for path in sources(FARM) if not path.is_relative_to(FARM / "backend")]
    found = violations(files, "docker")
    assert not found, "only farm/backend/ talks to Docker; ask a target's backend instead: " + "; ".join(found)


def test_no_class_name_is_defined_twice() -> None:
    # One name, one meaning: a reader (and a grep) must not meet the controller's Target as the job's, or the
    # report's TargetResult as the job's.
    defined: dict[str, list[str]] = {}
    for path in sources(FARM):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    twice = {name: where for name, where in defined.items() if len(where) > 1}
    assert not twice, f"give each a name that says what it is: {twice}"


# The layers in data-flow order; a layer may import the ones before it (and the job's contracts), never one after.
LAYERS = ("targets", "host", "images", "backend", "model|inputs", "report", "gate", "controller", "api", "cli")


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "farm":
        return None
    return next((rank for rank, names in enumerate(LAYERS) if parts[1] in names.split("|")), None)


def against_the_flow(module: str, source: str, *, package: bool = False) -> list[tuple[int, str]]:
    """The imports of ``module`` that name a later layer than its own."""
    own = layer_of(module)
    if own is None:
        return []
    return [(line, name) for line, name in imported(source, module, package=package) if (layer_of(name) or -1) > own]


def test_the_folders_follow_the_data_flow() -> None:
    listed = {name for names in LAYERS for name in names.split("|")}
    folders = {p.name for p in FARM.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders - listed <= {"job", "models"}, f"place each folder in LAYERS: {sorted(folders - listed)}"
    loose = sorted(p.name for p in FARM.glob("*.py") if p.name not in {"__init__.py", "__main__.py", "errors.py"})
    assert not loose, f"a module at farm/'s root belongs to no layer; move it into one: {loose}"
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources(FARM)
        for line, name in against_the_flow(
            module_name(path), path.read_text(encoding="utf-8"), package=path.name == "__init__.py"
        )
    ]
    assert not found, "a layer imports only the layers before it; move the shared part down: " + "; ".join(found)


def test_the_flow_rule_sees_a_breach() -> None:
    source = "from farm.controller.fleet import Fleet\nfrom farm.host import probe\nfrom farm.job.spec import Spec\n"
    assert against_the_flow("farm.targets.config", source) == [
        (1, "farm.controller.fleet"),
        (1, "farm.controller.fleet.Fleet"),
        (2, "farm.host"),
        (2, "farm.host.probe"),
    ]
    assert against_the_flow("farm.cli.common", source) == []
    assert against_the_flow("farm.job.spec", source) == []  # the job's own rule covers it
