"""`farm matrix --tuned DIR`: the models `farm tune` made, one per target, evaluated as the variant "tuned".

A tuned model is a target's own: its search kept out of int8 what that target's kernels and quantization need, so
each target evaluates the model its own search made, beside the naive variants, with the same accuracy figures,
alternating timing rounds and recommendation. Release gating then holds the tuned model to the same rules.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from farm.errors import BadInput
from farm.files import file_sha256
from farm.inspect import ModelInfo

TUNE_REPORT = "tune.json"
# In the job's input folder.
STAGED_DIR = "tuned"


@dataclass(frozen=True, kw_only=True)
class TunedModel:
    path: Path
    # How farm tune made it: its tune.json's best.quantization (the quantizer's record).
    quantization: Mapping[str, Any]
    sha256: str


@dataclass(frozen=True, kw_only=True)
class TunedModels:
    """What ``--tuned`` named: per target a tuned model, or why that target's search left none."""

    source: Path
    models: Mapping[str, TunedModel] = field(default_factory=dict)
    none: Mapping[str, str] = field(default_factory=dict)

    def spec(self, target: str) -> dict[str, Any] | None:
        """The job spec's "tuned" block for ``target`` (paths relative to the input folder), or None."""
        model = self.models.get(target)
        if model is None:
            return None
        return {"model": f"{STAGED_DIR}/{target}.onnx", "quantization": dict(model.quantization)}

    def stage(self, inputs: Path) -> None:
        """Each tuned model into ``inputs``/tuned/<target>.onnx, with its external data beside it."""
        folder = inputs / STAGED_DIR
        for target, model in self.models.items():
            folder.mkdir(exist_ok=True)
            loaded = onnx.load(str(model.path), load_external_data=False)
            external = [t for t in loaded.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
            destination = folder / f"{target}.onnx"
            if external:
                # Saved whole again under the staged name: the data file keeps a name only this target uses.
                whole = onnx.load(str(model.path))
                onnx.save_model(whole, str(destination), save_as_external_data=True,
                                location=f"{destination.name}.data")
            else:
                shutil.copyfile(model.path, destination)

    def warnings(self, selected: list[str]) -> list[str]:
        return [f"--tuned {self.source}: no tuned model for {name} ({self.none[name]})"
                for name in selected if name in self.none]


def load_tuned(path: Path, info: ModelInfo) -> TunedModels:
    """``--tuned``: a farm tune output folder (or its tune.json), for the model ``info`` describes."""
    report_path = path / TUNE_REPORT if path.is_dir() else path
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"--tuned {path}: there is no {report_path.name} there",
                       fix="give the --out folder of a farm tune run (it holds tune.json and tuned/)") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"--tuned {path}: {report_path} cannot be read as JSON ({exc})",
                       fix="give the --out folder of a farm tune run") from None
    if not isinstance(report, dict) or report.get("schema") != "farm.tune-report/1":
        raise BadInput(f"--tuned {path}: {report_path} is not a farm tune report (schema farm.tune-report/1)",
                       fix="give the --out folder of a farm tune run")
    tuned_sha = (report.get("model") or {}).get("sha256")
    if tuned_sha != info.sha256:
        raise BadInput(f"--tuned {path}: farm tune tuned another model ({(report.get('model') or {}).get('path')}, "
                       f"sha256 {str(tuned_sha)[:12]}), not {info.path} (sha256 {info.sha256[:12]})",
                       fix=f"run farm tune {info.path} first, or drop --tuned")
    models: dict[str, TunedModel] = {}
    none: dict[str, str] = {}
    for entry in report.get("targets") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        best: dict[str, Any] = entry["best"] if isinstance(entry.get("best"), dict) else {}
        file = entry.get("model_file")
        if entry.get("status") != "ok" or entry.get("verdict") != "tuned" or not file:
            none[name] = (f"farm tune said keep fp32: {entry.get('reason')}" if entry.get("verdict") == "keep-fp32"
                          else f"its search {entry.get('status')}: {entry.get('reason')}")
            continue
        model = Path(file)
        if not model.is_absolute():
            model = report_path.parent / model
        if not model.is_file():
            # The report names where farm tune wrote it; a moved folder keeps it under tuned/.
            model = report_path.parent / "tuned" / f"{name}.onnx"
        if not model.is_file() or not isinstance(best.get("quantization"), dict):
            raise BadInput(f"--tuned {path}: the tuned model of {name} is missing ({file})",
                           fix="keep tuned/<target>.onnx beside tune.json, or run farm tune again")
        models[name] = TunedModel(path=model, quantization=best["quantization"], sha256=file_sha256(model))
    return TunedModels(source=path, models=models, none=none)
