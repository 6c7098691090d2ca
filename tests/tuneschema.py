"""The tune contracts' JSON Schemas, for the tests: every tune.json a test makes is checked against its schema.

``farm.tune/1`` (farm/job/tune/schema.json, what the job's tune stage writes) and ``farm.tune-report/1``
(farm/controller/tune-report.schema.json, what `farm tune` writes) take their figures from ``farm.report/2``
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
TUNE_REPORT_SCHEMA = ("farm.controller", "tune-report.schema.json")
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


# Whole documents for the tests that build entries by hand: the least each contract holds.
ACCURACY: dict[str, Any] = {"cosine": 0.9999, "max_abs": 0.01, "top1_agreement": 1.0, "accuracy": None}
MODEL: dict[str, Any] = {
    "path": "model.onnx", "sha256": "0" * 64, "ir_version": 8, "opsets": {"": 17}, "inputs": [], "outputs": [],
}  # fmt: skip


def trial_entry(index: int, **values: Any) -> dict[str, Any]:
    """One ``trials[]`` entry of farm.tune/1: a start of u8s8-qdq that kept tolerance, with ``values`` over it."""
    return {
        "index": index, "change": "start from u8s8-qdq", "lane": 0, "step": "start", "point": None, "added": [],
        "added_seven_bit": [], "returned": [], "exclude": [], "seven_bit": [], "fused": False, "variant": "u8s8-qdq",
        "calibration": "minmax", "per_channel": False, "reduce_range": False, "nodes": None,
        "accuracy": dict(ACCURACY), "latency_ms": None, "speedup": None, "within_tolerance": True, "kept": True,
        "note": None, "why": None, "error": None, "seconds": 0.5, **values,
    }  # fmt: skip


def tune_document(**values: Any) -> dict[str, Any]:
    """A farm.tune/1 document as the job starts it (nothing searched yet), with ``values`` over it."""
    return {
        "schema": "farm.tune/1", "status": "running", "error": None, "target": "x86-avx2", "mode": "native",
        "timed": True, "floor": 1.1, "tolerance": {"cosine": 0.99, "top1_agreement": 0.99},
        "budget": {"seconds": None, "trials": 20}, "start": None, "candidate": None, "fp32": None, "naive": {},
        "ranking": [], "ranking_source": None, "fusions": [], "kernels": [], "lanes": [], "trials": [],
        "stopped": None, "verdict": None, "reason": None, "best": None, "excluded": [], "seven_bit": [],
        "returned": [], "tuned_model": None, "warnings": [], "seconds": 0.0, **values,
    }  # fmt: skip


def tune_report(*targets: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A farm.tune-report/1 document of ``targets``, with ``values`` over it."""
    return {
        "schema": "farm.tune-report/1", "created": "2026-01-01T00:00:00Z", "model": dict(MODEL), "floor": 1.1,
        "budget": {"budget_s": None, "budget_trials": 20}, "warnings": [], "targets": list(targets),
        "differences": [], **values,
    }  # fmt: skip
