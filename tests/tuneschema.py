"""The tune contracts' JSON Schemas, for the tests: every tune.json a test makes is checked against its schema.

``farm.tune/1`` (farm/job/tune/schema.json, what the job's tune stage writes) and ``farm.tune-report/1``
(farm/tune-report.schema.json, what `farm tune` writes) take their figures from ``farm.report/2``
(farm/report/schema.json), so the three are read from the installed package into one registry.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from importlib import resources
from typing import Any

from referencing import Registry, Resource

from farm.report.schema import json_path

TUNE_SCHEMA = ("farm.job.tune", "schema.json")
TUNE_REPORT_SCHEMA = ("farm", "tune-report.schema.json")
REPORT_SCHEMA = ("farm.report", "schema.json")
# By name, as farm/report/schema.py does: mypy has no stubs for jsonschema.
jsonschema = importlib.import_module("jsonschema")


def _load(where: tuple[str, str]) -> dict[str, Any]:
    package, name = where
    schema: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))
    return schema


@cache
def _validators() -> dict[str, Any]:
    schemas = {name: _load(where) for name, where in (("tune", TUNE_SCHEMA), ("report", TUNE_REPORT_SCHEMA))}
    documents = [*schemas.values(), _load(REPORT_SCHEMA)]
    registry: Registry[Any] = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents
    )
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    return {name: jsonschema.Draft202012Validator(s, registry=registry) for name, s in schemas.items()}


def _check(kind: str, document: object) -> None:
    error = jsonschema.exceptions.best_match(_validators()[kind].iter_errors(document))
    if error is not None:
        raise AssertionError(f"not a valid {kind} document at {json_path(error.absolute_path)}: {error.message}")


def check_tune(document: object) -> None:
    """Fail naming the first place where ``document`` (a parsed job tune.json) breaks ``farm.tune/1``."""
    _check("tune", document)


def check_tune_report(document: object) -> None:
    """Fail naming the first place where ``document`` (a parsed farm tune report) breaks ``farm.tune-report/1``."""
    _check("report", document)
