"""Every variant name farm knows and how each int8 one is made: the one definition the controller (targets.toml's
``candidates``) and the job (prepare, evaluate, recommend) both read (docs/contracts.md section 1).

Standard library only, so that parsing a spec or a targets.toml never loads onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FP32 = "fp32"
OPTIMIZED = "optimized"
BASELINES = (FP32, OPTIMIZED)
# The model `farm tune` made for a target (`farm matrix --tuned DIR`): not a recipe, a file that target's search left.
TUNED = "tuned"


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    kind: Literal["static", "dynamic"]
    activation: Literal["uint8", "int8"]
    weight: Literal["uint8", "int8"]
    reduce_range: bool = False
    # One scale per output channel of a weight. DequantizeLinear has ``axis`` only from opset 13, so prepare raises
    # an older model's opset first (FINDINGS.md: ORT refuses the per-channel model of an opset-11 graph otherwise).
    per_channel: bool = False
    # Dynamic quantization of the nodes inside If/Loop/Scan bodies (onnxruntime's EnableSubgraph), which
    # quantize_static never enters.
    subgraphs: bool = False


RECIPES: Mapping[str, Recipe] = {
    "s8s8-qdq": Recipe(kind="static", activation="int8", weight="int8"),
    "u8s8-qdq": Recipe(kind="static", activation="uint8", weight="int8"),
    # 7-bit weights keep a VPMADDUBSW pair sum (2 * 255 * 63) below the int16 limit: the classic AVX2 remedy.
    "u8s8-qdq-rr": Recipe(kind="static", activation="uint8", weight="int8", reduce_range=True),
    "u8u8-qdq": Recipe(kind="static", activation="uint8", weight="uint8"),
    "s8s8-qdq-pc": Recipe(kind="static", activation="int8", weight="int8", per_channel=True),
    "u8s8-qdq-pc": Recipe(kind="static", activation="uint8", weight="int8", per_channel=True),
    # Dynamic quantization always quantizes activations to uint8.
    "u8s8-dynamic": Recipe(kind="dynamic", activation="uint8", weight="int8"),
    "u8s8-dynamic-subgraph": Recipe(kind="dynamic", activation="uint8", weight="int8", subgraphs=True),
}
CANDIDATES = tuple(RECIPES)
# What a target tries when targets.toml names no candidates.
DEFAULT_CANDIDATES = ("s8s8-qdq", "u8s8-qdq", "u8s8-qdq-rr", "u8u8-qdq", "s8s8-qdq-pc", "u8s8-qdq-pc", "u8s8-dynamic")
# Added by the controller, beside u8s8-dynamic, when the model keeps quantizable nodes inside subgraphs.
SUBGRAPH_VARIANT = "u8s8-dynamic-subgraph"

# A runtime mitigation runs an int8 model again with a session option; its name is the variant's plus this, and
# this is the option (MLAS keeps 32-bit sums in its U8S8 kernels).
MITIGATION_SUFFIX = "+x64quantprecision"
X64_QUANT_PRECISION: Mapping[str, str] = {"session.x64quantprecision": "1"}
# Int8 kernels that cannot saturate on x86 without VNNI: U8U8 (VPMADDWD on 16-bit operands) and 7-bit weights.
SATURATION_SAFE = ("u8u8-qdq", "u8s8-qdq-rr")


def saturation_safe(name: str) -> bool:
    # The tuned model's search measured this tier's kernels node by node and kept out of int8 (or gave 7-bit
    # weights to) each node whose kernel saturates.
    return name in SATURATION_SAFE or name.endswith(MITIGATION_SUFFIX) or name == TUNED


# In the prepare stage's artifacts folder: the fp32 models the variants were quantized from. Their nodes and tensors
# are the ones each variant's follow (pre-processing fuses MatMul and Add into a Gemm, for one), so a comparison
# node by node (farm bisect, --divergence) runs fp32 from these.
PRE_PROCESSED = "pre.onnx"
PRE_PROCESSED_OPSET13 = "pre-opset13.onnx"


def quantized_from(artifacts: Path | None, name: str) -> Path | None:
    """The fp32 model in ``artifacts`` that variant ``name`` was quantized from; None where it is not there (an
    artifact cache entry made before farm kept them, a pre-processing that failed, the tuned model)."""
    recipe = RECIPES.get(name.removesuffix(MITIGATION_SUFFIX))
    if artifacts is None or recipe is None:
        return None
    chosen = [PRE_PROCESSED_OPSET13, PRE_PROCESSED] if recipe.per_channel else [PRE_PROCESSED]
    return next((artifacts / file for file in chosen if (artifacts / file).is_file()), None)
