"""Why a runtime refused to load a model, in classes a reader acts on (docs/contracts.md section 2).

The classes are read from onnxruntime's own words, which name the cause; ``farm inspect`` predicts the same classes
from the model and the runtime's capabilities, before anything runs.
"""

from __future__ import annotations

from typing import Literal

LoadFailure = Literal["ir-version", "opset", "missing-kernel", "external-data", "invalid-model", "other"]

# The first class whose words appear in the error, in this order: a message may mention more than one.
_WORDS: tuple[tuple[LoadFailure, tuple[str, ...]], ...] = (
    ("ir-version", ("Unsupported model IR version",)),
    ("opset", ("official support for domain", "Unsupported opset", "opset_import", "is under development")),
    ("missing-kernel", ("Could not find an implementation for", "NOT_IMPLEMENTED", "is not a registered")),
    ("external-data", ("external data", "External data", "external_data", "ExternalData")),
    (
        "invalid-model",
        (
            "INVALID_GRAPH",
            "INVALID_PROTOBUF",
            "INVALID_ARGUMENT",
            "ShapeInferenceError",
            "Type Error",
            "This is an invalid model",
            "Protobuf parsing failed",
        ),
    ),
)


def classify(error: str) -> LoadFailure:
    for kind, words in _WORDS:
        if any(word in error for word in words):
            return kind
    return "other"
