"""The options several commands share, defined once so their flags, defaults and help read alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TargetsOpt = Annotated[Path | None, typer.Option("--targets", envvar="FARM_TARGETS", help="targets file")]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", metavar="<name>", help="only this target (repeatable); default: all"),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", envvar="FARM_QUIET", help="plain progress lines")]
# Shared by the commands that read a model and its data (matrix, tune).
ModelArg = Annotated[Path | None, typer.Argument(help="the ONNX model; default: the bundled digits classifier")]
DataOpt = Annotated[Path | None, typer.Option(help="inputs: FILE.npz (one array per input) or an ONNX test-data dir")]
LabelsOpt = Annotated[Path | None, typer.Option(help="FILE.npy with one class index per sample")]
ShapeOpt = Annotated[
    list[str] | None, typer.Option(metavar="<input=dims>", help="fill dynamic dims: name=1,3,224,224 (repeatable)")
]
SamplesOpt = Annotated[int | None, typer.Option(min=1, help="use the first N samples")]
MinCosineOpt = Annotated[
    float, typer.Option(min=-1.0, max=1.0, envvar="FARM_MIN_COSINE", help="tolerance: cosine to fp32")
]
ThreadsOpt = Annotated[int, typer.Option(min=1, envvar="FARM_THREADS", help="intra-op threads for timing")]
MinTop1Opt = Annotated[
    float, typer.Option(min=0.0, max=1.0, envvar="FARM_MIN_TOP1", help="tolerance: top-1 agreement with fp32")
]
# `farm matrix --variant`: the variants to evaluate (farm/controller/variantpick.py).
VariantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        metavar="<name>",
        help="evaluate only this variant (repeatable; fp32 always runs): fp32, optimized, an int8 candidate, tuned",
    ),
]
