"""``--output`` and ``--metric``, checked on the host before any container starts.

The metric file is parsed, never run, here: the user's code runs only inside the target's hardened container
(farm/job/usermetric.py), so a check on the controller cannot execute it.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import BadInput, one_line
from farm.model.inspect import ModelInfo
from farm.targets.config import nearest

_FORM = "--metric FILE.py:FUNCTION, e.g. --metric detection.py:score_agreement"


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricFile:
    path: Path
    function: str

    @property
    def label(self) -> str:
        """How the report names it: the file's name, not the controller's path."""
        return f"{self.path.name}:{self.function}"


def check_metric(given: str) -> MetricFile:
    """``FILE.py:FUNCTION`` as a file that exists, parses, and defines FUNCTION at its top level."""
    file, sep, function = given.rpartition(":")
    if not sep or not file or not function.isidentifier():
        raise BadInput(f"--metric {given} is not FILE.py:FUNCTION", fix=f"write it as {_FORM}")
    path = Path(file)
    if not path.is_file():
        raise BadInput(f"--metric file {path} does not exist", fix=f"pass an existing Python file: {_FORM}")
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise BadInput(
            f"--metric file {path.name} is not valid Python ({one_line(exc)})",
            fix="fix the file so that `python -m py_compile` accepts it",
        ) from exc
    except OSError as exc:
        raise BadInput(f"--metric file {path} cannot be read ({one_line(exc)})", fix="check its permissions") from exc
    defined = [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    if function not in defined:
        hint = nearest(function, defined) if defined else "it defines no function at its top level"
        raise BadInput(
            f"--metric file {path.name} defines no top-level function {function}",
            fix=f"{hint}; the function takes (fp32_outputs, outputs, labels)",
        )
    return MetricFile(path=path.resolve(), function=function)


def check_outputs(outputs: Sequence[str], model: ModelInfo) -> None:
    names = [t.name for t in model.outputs]
    for name in outputs:
        if name not in names:
            raise BadInput(
                f"--output {name} is not an output of {Path(model.path).name}",
                fix=f"{nearest(name, names)} (its outputs: {', '.join(names)})",
            )
    if len(set(outputs)) != len(outputs):
        raise BadInput("--output names an output twice", fix="give each output once")
