"""`farm matrix --tuned DIR`: the models `farm tune` made, one per target, evaluated as the variant "tuned".

A tuned model is a target's own: its search kept out of int8 what that target's kernels and quantization need, so
each target evaluates the model its own search made, beside the naive variants, with the same accuracy figures,
alternating timing rounds and recommendation. Release gating then holds the tuned model to the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from farm.errors import BadInput
from farm.host.files import file_sha256
from farm.job.codec import ContractError, decode
from farm.job.modelfile import copy_model
from farm.job.report import Quantization
from farm.job.spec import TunedModel
from farm.job.tunecontract import Searched
from farm.model.inspect import ModelInfo

# What `farm tune` writes into its --out folder.
REPORT_FILE = "tune.json"
REPORT_SCHEMA = "farm.tune-report/1"
TUNED_DIR = "tuned"


@dataclass(frozen=True, kw_only=True)
class TunedFile:
    path: Path
    # How farm tune made it: its tune.json's best.quantization (the quantizer's record, farm.report/2's quantization).
    quantization: Quantization
    # Of the model file and its external data files: what the target's --resume key depends on.
    sha256: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TunedModels:
    """What ``--tuned`` named: per target a tuned model, or why there is none for it."""

    source: Path
    models: Mapping[str, TunedFile] = field(default_factory=dict)
    none: Mapping[str, str] = field(default_factory=dict)

    def spec(self, target: str) -> TunedModel | None:
        """The job spec's "tuned" block for ``target`` (paths relative to the input folder), or None."""
        model = self.models.get(target)
        if model is None:
            return None
        return TunedModel(model=Path(f"{TUNED_DIR}/{target}.onnx"), quantization=model.quantization)

    def stage(self, inputs: Path) -> None:
        """Each tuned model into ``inputs``/tuned/<target>.onnx, with its external data beside it."""
        for target, model in self.models.items():
            (inputs / TUNED_DIR).mkdir(exist_ok=True)
            copy_model(model.path, inputs / TUNED_DIR / f"{target}.onnx")

    def warnings(self, selected: Sequence[str]) -> list[str]:
        """One line per selected target that gets no tuned variant, and why."""
        return [
            f"--tuned {self.source}: no tuned model for {name} "
            f"({self.none.get(name, 'farm tune did not search this target')})"
            for name in selected
            if name not in self.models
        ]


def load_tuned(path: Path, info: ModelInfo) -> TunedModels:
    """``--tuned``: a farm tune output folder (or its tune.json), for the model ``info`` describes."""
    report_path = path / REPORT_FILE if path.is_dir() else path
    fix = "give the --out folder of a farm tune run (it holds tune.json and tuned/)"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        what = f"there is no {REPORT_FILE} there" if path.is_dir() else "does not exist"
        raise BadInput(f"--tuned {path}: {what}", fix=fix) from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"--tuned {path}: {report_path} cannot be read as JSON ({exc})", fix=fix) from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise BadInput(f"--tuned {path}: {report_path} is not a farm tune report (schema {REPORT_SCHEMA})", fix=fix)
    model: dict[str, Any] = report["model"] if isinstance(report.get("model"), dict) else {}
    if model.get("sha256") != info.sha256:
        raise BadInput(
            f"--tuned {path}: farm tune tuned another model ({model.get('path')}, sha256 "
            f"{str(model.get('sha256'))[:12]}), not {info.path} (sha256 {info.sha256[:12]})",
            fix=f"run farm tune {info.path} first, or drop --tuned",
        )
    models: dict[str, TunedFile] = {}
    none: dict[str, str] = {}
    entries: list[Any] = report["targets"] if isinstance(report.get("targets"), list) else []
    for index, entry in enumerate(entries):
        try:
            searched = decode(Searched, entry, where=f"targets[{index}].")
        except ContractError as error:
            raise BadInput(
                f"--tuned {path}: {report_path} is not a whole farm tune report ({error})", fix=fix
            ) from None
        found = _tuned_file(report_path.parent, searched)
        if isinstance(found, str):
            none[searched.name] = found
        else:
            models[searched.name] = found
    return TunedModels(source=path, models=models, none=none)


def _tuned_file(folder: Path, searched: Searched) -> TunedFile | str:
    """The target's tuned model beside its tune.json, or why it has none."""
    best = searched.tuned
    if best is None:
        if searched.verdict == "keep-fp32":
            return f"farm tune said keep fp32: {searched.reason}"
        return f"its search {searched.status}: {searched.reason}"
    quantization = best.quantization
    # The folder as farm tune left it first: the path it recorded may be another machine's, or moved.
    candidates = [folder / TUNED_DIR / f"{searched.name}.onnx"]
    if searched.model_file is not None:
        candidates.append(Path(searched.model_file))
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return f"{candidates[0]} is missing; run farm tune again"
    if quantization is None:
        return f"{folder / REPORT_FILE} does not say how it was quantized (best.quantization); run farm tune again"
    return TunedFile(path=path, quantization=quantization, sha256=_hashes(path))


def _hashes(path: Path) -> tuple[str, ...]:
    """The SHA-256 of the model file and of each external data file it names."""
    model = onnx.load(str(path), load_external_data=False)
    locations = sorted(
        {entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"}
    )
    return (
        file_sha256(path),
        *(file_sha256(path.parent / name) for name in locations if (path.parent / name).is_file()),
    )
