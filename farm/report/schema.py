"""Checking a report against ``farm.report/2`` or ``/1`` (``schema.json``, next to this module).

jsonschema is a dependency of farm; should an environment lack it all the same, only the top level is checked,
which still catches a file that is not a farm report at all.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from types import ModuleType
from typing import Any

from farm.errors import BadInput
from farm.job.report import SCHEMA_ID

# What farm reads: /1 lacks the run block, so its runs are never called comparable.
READABLE_SCHEMAS = ("farm.report/1", SCHEMA_ID)
TOP_LEVEL_KEYS = ("schema", "farm_version", "created", "model", "data", "tolerance", "warnings", "targets")
_FIX = "write the report with this version of farm, or correct the value at that path"


class InvalidReport(BadInput):
    """A report (or one target's result) does not follow farm.report/2. ``path`` is where, as ``$.a[0].b``."""

    def __init__(self, path: str, problem: str, *, what: str = "report") -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"reading the {what} failed because at {path}: {problem}", fix=_FIX)


@cache
def load_schema() -> dict[str, Any]:
    """The JSON Schema of farm.report/2 (which also reads /1), read from the installed package."""
    text = resources.files("farm.report").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(report: object) -> None:
    """Raise InvalidReport naming the first problem in ``report`` (a parsed JSON document)."""
    jsonschema = _jsonschema()
    if jsonschema is None:
        _check_top_level(report)
        return
    _check(jsonschema, load_schema(), report, "report")


def validate_target(target: object) -> None:
    """Like validate, for one ``targets[]`` entry, such as the ``result.json`` a job writes."""
    jsonschema = _jsonschema()
    if jsonschema is None:
        if not isinstance(target, Mapping):
            raise InvalidReport("$", f"expected an object, got {type(target).__name__}", what="target result")
        return
    schema = load_schema()
    target_schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/target"}
    _check(jsonschema, target_schema, target, "target result")


def json_path(parts: Iterable[str | int]) -> str:
    """``["targets", 0, "mode"]`` → ``$.targets[0].mode``."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _jsonschema() -> ModuleType | None:
    # Imported by name so that the fallback is testable and mypy does not need jsonschema's (absent) stubs.
    try:
        return importlib.import_module("jsonschema")
    except ImportError:
        return None


def _check(jsonschema: ModuleType, schema: Mapping[str, Any], document: object, what: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    # best_match prefers the shallowest error and looks inside anyOf, which reads better than iteration order.
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise InvalidReport(json_path(error.absolute_path), _shorten(str(error.message)), what=what)


def _shorten(problem: str, limit: int = 300) -> str:
    # jsonschema quotes the whole offending value, which for a wrong-typed "targets" is the whole report.
    return problem if len(problem) <= limit else problem[: limit - 1] + "…"


def _check_top_level(report: object) -> None:
    if not isinstance(report, Mapping):
        raise InvalidReport("$", f"expected an object, got {type(report).__name__}")
    for key in TOP_LEVEL_KEYS:
        if key not in report:
            raise InvalidReport("$", f"{key!r} is a required property")
    if report["schema"] not in READABLE_SCHEMAS:
        raise InvalidReport("$.schema", f"{report['schema']!r} is not one of {', '.join(READABLE_SCHEMAS)}")
    if not isinstance(report["targets"], list):
        raise InvalidReport("$.targets", "expected an array")
    if report["schema"] == SCHEMA_ID and not isinstance(report.get("run"), Mapping):
        raise InvalidReport("$", "'run' is a required property")
