"""The target's int8 candidates: each prepared model, with the runtime mitigations that apply to it on this target,
run and measured; a candidate prepare could not make, or made without quantizing anything, is reported as such."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from farm.job.codec import decode
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.measure import VariantMeasure
from farm.job.modelfile import model_size
from farm.job.report import Quantization, Variant
from farm.job.spec import Spec
from farm.job.variants import MITIGATION_SUFFIX, SUBGRAPH_VARIANT

X64_QUANT_PRECISION = {"session.x64quantprecision": "1"}


def mitigations_for(spec: Spec, variant: str) -> list[tuple[str, dict[str, str]]]:
    """``(name, session config)`` for each runtime mitigation that applies to ``variant`` on this target."""
    target = spec.target
    if "x64quantprecision" in spec.mitigations and target.saturation_risk and variant.startswith("u8s8-"):
        return [(variant + MITIGATION_SUFFIX, X64_QUANT_PRECISION)]
    return []


def read_prepared(artifacts: Path | None) -> dict[str, Any]:
    """prepare.json as it travels with the artifacts: how each variant was made, or why it was not."""
    if artifacts is None:
        return {}
    try:
        prepared = json.loads((artifacts / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prepared if isinstance(prepared, dict) else {}


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidates:
    """The candidates of ``spec``, as prepare.json (``prepared``) says each was made."""

    spec: Spec
    prepared: Mapping[str, Any]
    file: ResultFile
    measure: VariantMeasure

    def run(self, name: str) -> None:
        """Add the results of candidate ``name`` and its mitigated variants to the file."""
        artifact = None if self.spec.artifacts is None else self.spec.artifacts / f"{name}.onnx"
        variants = [(name, {}), *mitigations_for(self.spec, name)]
        quantization = self._quantization(name)
        if artifact is None or not artifact.is_file():
            why = self._missing_artifact(name, artifact)
            for variant, _ in variants:
                self.file.add(Variant(name=variant, status="failed", error=why, quantization=quantization))
            return
        unquantized = self._not_quantized(quantization)
        if unquantized is not None:
            # An fp32 model under an int8 name: running it would only measure noise and invite a false pick.
            for variant, _ in variants:
                self.file.add(
                    Variant(
                        name=variant,
                        status="skipped",
                        error=unquantized,
                        size_bytes=model_size(artifact),
                        quantization=quantization,
                    )
                )
            return
        for variant, config in variants:
            self.file.begin(variant)
            self.file.add(replace(self.measure.variant(variant, artifact, config), quantization=quantization))

    def _quantization(self, name: str) -> Quantization | None:
        record = self.prepared.get("variants", {}).get(name, {})
        quantization = record.get("quantization") if isinstance(record, dict) else None
        if quantization is None:
            return None
        # The same job wrote it (prepare stage), so a record that does not decode is farm's bug: it fails loudly.
        return decode(Quantization, quantization, where=f"prepare.json variants.{name}.quantization.")

    def _not_quantized(self, quantization: Quantization | None) -> str | None:
        count = None if quantization is None else quantization.nodes
        if count is None:
            return None
        reason = count.not_quantized()
        if reason and count.quantizable_in_subgraphs and SUBGRAPH_VARIANT in self.spec.candidates:
            reason += f"; {SUBGRAPH_VARIANT} quantizes inside them"
        return reason

    def _missing_artifact(self, name: str, artifact: Path | None) -> str:
        if artifact is None:
            return "no artifacts directory was given, so there is no quantized model to run"
        record = self.prepared.get("variants", {}).get(name)
        error = record.get("error") if isinstance(record, dict) else None
        if error:
            return f"quantization failed in prepare: {error}"
        return f"artifacts/{artifact.name} is missing (prepare did not make it)"
