"""`farm bisect`: where an int8 variant leaves fp32 on a target, node by node."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from farm.cli.common import open_fleet
from farm.cli.options import DataOpt, LabelsOpt, ModelArg, QuietOpt, SamplesOpt, ShapeOpt, TargetsOpt
from farm.controller import progress
from farm.errors import Interrupted
from farm.job.divergence import THRESHOLD_DB
from farm.job.variants import FP32


def bisect(
    model: ModelArg = None,
    target: Annotated[str, typer.Option("--target", "-t", metavar="<name>", help="the target to run it in")] = "",
    variant: Annotated[
        str,
        typer.Option(
            metavar="<name>",
            help="the int8 variant to compare with fp32 there, e.g. u8s8-qdq; fp32 (the default with --against) "
            "compares fp32 itself across targets",
        ),
    ] = "",
    against: Annotated[
        str | None,
        typer.Option(
            metavar="<name>",
            help="compare with the same variant's tensors on this target instead of fp32 on --target (without "
            "--variant: where --target's fp32 leaves this target's)",
        ),
    ] = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    shape: ShapeOpt = None,
    samples: SamplesOpt = None,
    threshold: Annotated[
        float, typer.Option(help="a node whose SQNR to fp32 is below this many dB diverges")
    ] = THRESHOLD_DB,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the answer as JSON to FILE")] = None,
    cache: Annotated[
        bool, typer.Option(help="reuse the int8 artifacts an earlier farm matrix made (farm's artifact cache)")
    ] = True,
    targets_file: TargetsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Where --variant's tensors leave fp32's on --target (or, with --against, the same variant's on another target;
    without --variant, where --target's fp32 leaves the --against target's), node by node, measured in the targets:
    each node's SQNR and cosine to the reference, the local error it adds (its int8 group, or its node, alone on the
    reference's inputs), the first node below --threshold and the worst by local error. Exits 5 when the comparison
    could not run."""
    from farm.controller.bisect import BisectOptions, document, render, run_bisect
    from farm.controller.jobs import InputFiles, JobSettings, load_inputs
    from farm.errors import BadInput

    if not target or not (variant or against):
        raise BadInput(
            f"farm bisect needs {'--target' if not target else '--variant, or --against to compare fp32'}",
            fix="e.g. farm bisect model.onnx --target x86-avx2 --variant u8s8-qdq (or --against arm64 for fp32)",
        )
    settings = JobSettings()
    given = load_inputs(
        InputFiles(model=model, data=data, labels=labels, shapes=shape or [], samples=samples), settings
    )
    fleet_ = open_fleet(targets_file)
    options = BisectOptions(
        target=target, variant=variant or FP32, threshold_db=threshold, against=against, settings=settings, cache=cache
    )
    try:
        with progress.reporter(quiet) as report:
            found = run_bisect(fleet_, given, options, report)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; every container farm started was removed") from None
    if json_file is not None:
        json_file.write_text(json.dumps(document(found), indent=2, allow_nan=False) + "\n")
    sys.stdout.write(render(found))
    raise typer.Exit(found.exit_code)
