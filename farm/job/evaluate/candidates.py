"""The target's int8 candidates: each prepared model, with the runtime mitigations that apply to it on this target,
run and measured; a candidate prepare could not make, or made without quantizing anything, is reported as such."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from farm.job.codec import decode
from farm.job.evaluate.measure import VariantMeasure
from farm.job.evaluate.spread import Slot
from farm.job.modelfile import model_size
from farm.job.report import Quantization, Variant
from farm.job.spec import Spec
from farm.job.variants import MITIGATION_SUFFIX, SUBGRAPH_VARIANT, X64_QUANT_PRECISION


def mitigations_for(spec: Spec, variant: str) -> list[tuple[str, dict[str, str]]]:
    """``(name, session config)`` for each runtime mitigation that applies to ``variant`` on this target."""
    target = spec.target
    if "x64quantprecision" in spec.mitigations and target.saturation_risk and variant.startswith("u8s8-"):
        return [(variant + MITIGATION_SUFFIX, dict(X64_QUANT_PRECISION))]
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

    def slots(self, name: str) -> list[Slot]:
        """Candidate ``name`` and its mitigated variants, in order: each ready (failed, skipped) or to run."""
        artifact = None if self.spec.artifacts is None else self.spec.artifacts / f"{name}.onnx"
        variants = [(name, {}), *mitigations_for(self.spec, name)]
        quantization = self._quantization(name)
        if artifact is None or not artifact.is_file():
            why = self._missing_artifact(name, artifact)
            return [
                Slot(name=variant, ready=Variant(name=variant, status="failed", error=why, quantization=quantization))
                for variant, _ in variants
            ]
        unquantized = self._not_quantized(quantization)
        if unquantized is not None:
            # An fp32 model under an int8 name: running it would only measure noise and invite a false pick.
            skipped = partial(
                Variant, status="skipped", error=unquantized, size_bytes=model_size(artifact), quantization=quantization
            )
            return [Slot(name=variant, ready=skipped(name=variant)) for variant, _ in variants]
        return [
            Slot(
                name=variant,
                run=partial(_measure, variant, artifact, config),
                path=artifact,
                config=config,
                quantization=quantization,
            )
            for variant, config in variants
        ]

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


def _measure(name: str, artifact: Path, config: dict[str, str], measure: VariantMeasure) -> Variant:
    return measure.variant(name, artifact, config)
