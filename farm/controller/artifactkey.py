"""The key of one toolchain's int8 artifacts in farm's artifact cache: everything the prepare stage's output depends
on, and nothing of when or where it ran.

What prepare reads is the model (its bytes and external data, and the controller's rewrite of it), the data as
staged, the spec's settings (the candidates, the calibration) and the runtime it runs in: the maker's image, whose
content tag covers onnxruntime's and onnx's versions and farm's job code. The image stands for the toolchain, not
for the CPU: an older runtime cannot read what a newer quantizer writes (onnxruntime 1.17 reads ai.onnx.ml opset 4,
a 1.31 quantizer imports 5), so artifacts of one image never serve another's key. Paths in the spec are relative to
the run's input folder and hashes are of contents, so the key is the same for every run of the same work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from farm.controller.resume import resume_key
from farm.job.codec import json_object
from farm.job.report import SHORT_KEY
from farm.job.spec import Spec

# Bump when what the key covers, or what a cache entry holds, changes meaning: every earlier entry then misses.
KEY_VERSION = "farm.artifact-key/1"
# The spec's fields the prepare stage does not read (farm/job/prepare.py), or that only describe the target the job
# runs in (the maker's image stands for what of it matters). Every other field is part of the key, so a field added
# to the spec later changes the key until someone shows it does not change the artifacts and lists it here.
NOT_READ_BY_PREPARE = frozenset(
    {
        "target",
        "mitigations",
        "optimization_level",
        "threads",
        "timing",
        "tolerance",
        "outputs",
        "metric",
        "tune",
        "tuned",
        "estimate",
        "profile",
        "skip",
        "bisect",
        "divergence",
    }
)


@dataclass(frozen=True, kw_only=True)
class Ingredients:
    """What one toolchain's artifacts are made from, each as a content hash or a setting."""

    model_sha256: str
    # Each external data file's location, as the model names it, and its hash.
    external_data: Mapping[str, str]
    # The controller's rewrite of the model (onnxoptimizer on the host), which prepare quantizes; None: none staged.
    rewritten_sha256: str | None
    # The inputs and labels as staged (farm.inputs.data.PreparedData.sha256: names, types, shapes and values).
    data_sha256: str
    # The prepare spec's fields that prepare reads (``spec_material``).
    spec: Mapping[str, Any]
    # The maker's image content hash (the tag's part after the colon; targets of one content share it).
    image: str


def artifact_key(ingredients: Ingredients) -> str:
    """The key, a sha256 in hex."""
    return resume_key(
        {
            "version": KEY_VERSION,
            "model": ingredients.model_sha256,
            "external_data": dict(ingredients.external_data),
            "rewritten": ingredients.rewritten_sha256,
            "data": ingredients.data_sha256,
            "spec": dict(ingredients.spec),
            "image": ingredients.image,
        }
    )


def spec_material(spec: Spec) -> dict[str, Any]:
    """The prepare spec as the key sees it: every field but those prepare does not read, and the candidates as a set
    (the order the selected targets list them in changes no artifact)."""
    material = {k: v for k, v in json_object(spec).items() if k not in NOT_READ_BY_PREPARE}
    material["candidates"] = sorted(material["candidates"])
    return material


def image_content(tag: str) -> str:
    """The content hash of an image tag ``farm/<target>:<hash>``: targets whose images have one content share it."""
    return tag.rsplit(":", 1)[-1]


def short(key: str) -> str:
    """The key as the log and the renderers show it."""
    return key[:SHORT_KEY]
