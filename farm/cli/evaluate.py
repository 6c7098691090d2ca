"""The commands that run a model in the targets or read it: matrix, tune, inspect, optimize."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from farm.cli.common import open_fleet, to_stderr
from farm.cli.options import (
    DataOpt,
    LabelsOpt,
    MinCosineOpt,
    MinTop1Opt,
    ModelArg,
    QuietOpt,
    SamplesOpt,
    ShapeOpt,
    TargetOpt,
    TargetsOpt,
    ThreadsOpt,
    VariantOpt,
)
from farm.controller import progress
from farm.errors import BadInput, Interrupted
from farm.job.spec import DEFAULT_FLOOR


def matrix(
    model: ModelArg = None,
    target: TargetOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    shape: ShapeOpt = None,
    samples: SamplesOpt = None,
    output: Annotated[
        list[str] | None,
        typer.Option(
            "--output",
            metavar="<name>",
            help="only this output makes the verdict (repeatable); default: every float output",
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="your own verdict: FILE.py:FUNCTION(fp32_outputs, outputs, labels) -> {'passed': bool, ...}"),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the report JSON to FILE")] = None,
    fmt: Annotated[
        str, typer.Option("--format", envvar="FARM_FORMAT", help="stdout: table|json|markdown|html|junit")
    ] = "table",
    out: Annotated[Path, typer.Option(envvar="FARM_OUT", help="where report.{json,md,html} and junit.xml go")] = Path(
        "farm-report"
    ),
    min_cosine: MinCosineOpt = 0.99,
    min_top1: MinTop1Opt = 0.99,
    calibration: Annotated[str, typer.Option(help="static calibration: minmax|entropy|percentile")] = "minmax",
    opt_level: Annotated[str, typer.Option(help="ORT offline optimization: basic|extended|all")] = "all",
    threads: ThreadsOpt = 1,
    iterations: Annotated[
        int | None,
        typer.Option(
            min=0, help="timed runs per variant on native and masked targets (default 200); emulated ones are not timed"
        ),
    ] = None,
    timing: Annotated[
        str,
        typer.Option(
            envvar="FARM_TIMING",
            help="adaptive: timing rounds bounded by time, decided variants stopped early; fixed: every variant "
            "200 runs in 10 rounds",
        ),
    ] = "adaptive",
    timeout: Annotated[
        float | None,
        typer.Option(min=1.0, envvar="FARM_TIMEOUT", help="seconds per container; default: each target's budget_s"),
    ] = None,
    keep: Annotated[
        bool, typer.Option(envvar="FARM_KEEP", help="keep containers and work files for debugging")
    ] = False,
    label: Annotated[
        str | None,
        typer.Option(
            envvar="FARM_LABEL", help="what this run is (a commit, a release), kept in the report for trends and gates"
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="write what each target's backend would create "
            "(container settings, Kubernetes manifests) into OUT/dry-run/; build and "
            "run nothing",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            envvar="FARM_RESUME",
            help="reuse each target's result from the report "
            "already in --out when the model, data, image and settings are unchanged; "
            "run the rest",
        ),
    ] = False,
    tuned: Annotated[
        Path | None,
        typer.Option(
            envvar="FARM_TUNED",
            help="a farm tune --out folder: each target "
            "also evaluates the model its search tuned, as the variant "
            "'tuned'",
        ),
    ] = None,
    estimates: Annotated[
        bool,
        typer.Option(
            envvar="FARM_ESTIMATES",
            help="run emulated targets under farm's counting QEMU, where `farm doctor --fix --estimates` built it, "
            "for instruction-count speed estimates; --no-estimates: accuracy only, faster",
        ),
    ] = True,
    profile: Annotated[
        bool,
        typer.Option(
            envvar="FARM_PROFILE",
            help="the deployment profile: each variant's peak memory and start-up in a process of its own, and p50 "
            "at each of the target's threads counts (targets.toml); --no-profile: faster",
        ),
    ] = True,
    cache: Annotated[
        bool,
        typer.Option(
            envvar="FARM_CACHE",
            help="reuse the int8 artifacts an earlier run made from the same model, data, settings and toolchain "
            "(farm's artifact cache, FARM_ARTIFACT_CACHE_DIR), and keep this run's; --no-cache: quantize anew and "
            "keep nothing",
        ),
    ] = True,
    variant: VariantOpt = None,
    divergence: Annotated[
        str,
        typer.Option(
            metavar="N|all|none",
            envvar="FARM_DIVERGENCE",
            help="per target, the out-of-tolerance int8 variants closest to tolerance that get where they leave fp32 "
            "(farm bisect's comparison, in the target)",
        ),
    ] = "2",
    targets_file: TargetsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Optimize, quantize and evaluate MODEL in every target; print the cross-target matrix."""
    from farm.api import DryRun, matrix_run, resume_hint
    from farm.report import FORMATS, render

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt} is not a format farm writes", fix="use one of " + "|".join(FORMATS))
    try:
        with progress.reporter(quiet) as report:
            result = matrix_run(
                model,
                targets=target or [],
                data=data,
                labels=labels,
                shapes=shape or [],
                samples=samples,
                outputs=output or [],
                metric=metric,
                min_cosine=min_cosine,
                min_top1=min_top1,
                calibration=calibration,
                opt_level=opt_level,
                threads=threads,
                iterations=iterations,
                timing=timing,
                timeout=timeout,
                keep=keep,
                label=label,
                resume=resume,
                tuned=tuned,
                estimates=estimates,
                profile=profile,
                cache=cache,
                variants=variant or [],
                divergence=divergence,
                targets_file=targets_file,
                out=out,
                json_file=json_file,
                progress=report,
                dry_run=dry_run,
            )
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; every container farm started was removed; {resume_hint(out)}") from None
    if isinstance(result, DryRun):
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(
            "\n".join(f"wrote {path}" for path in result.written) or "nothing to write: no selected target can run"
        )
        return
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    sys.stdout.write(render(result.report, fmt))
    raise typer.Exit(result.exit_code)


def tune(
    model: ModelArg = None,
    target: TargetOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    shape: ShapeOpt = None,
    samples: SamplesOpt = None,
    budget: Annotated[
        str | None, typer.Option(help="per target: a time (90s, 10m, 1h) or trials (40t); default 20 trials")
    ] = None,
    floor: Annotated[
        float,
        typer.Option(
            min=0.0, help="the speedup over fp32 a tuned model must keep (below 1: int8 may run slower, e.g. for size)"
        ),
    ] = DEFAULT_FLOOR,
    min_cosine: MinCosineOpt = 0.99,
    min_top1: MinTop1Opt = 0.99,
    threads: ThreadsOpt = 1,
    iterations: Annotated[
        int | None, typer.Option(min=0, help="timed runs per trial on native and masked targets (default 200)")
    ] = None,
    out: Annotated[Path, typer.Option(help="where tune.json and tuned/<target>.onnx go")] = Path("farm-tune"),
    resume: Annotated[
        bool,
        typer.Option(
            help="keep each target whose search in --out finished with the same model, "
            "data, image and settings; search the others again"
        ),
    ] = False,
    targets_file: TargetsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Per target, search the fastest mixed-precision model that holds the tolerance: rank the quantization points
    once, return the worst to fp32 one region at a time in the target itself, stop within tolerance, below the
    speedup floor or at the budget. "keep fp32" with the best trade-off found is a result, not a failure."""
    from farm.api import tune_run
    from farm.controller.tune import render

    try:
        with progress.reporter(quiet) as report:
            result = tune_run(
                model,
                targets=target or [],
                data=data,
                labels=labels,
                shapes=shape or [],
                samples=samples,
                budget=budget,
                floor=floor,
                min_cosine=min_cosine,
                min_top1=min_top1,
                threads=threads,
                iterations=iterations,
                out=out,
                resume=resume,
                targets_file=targets_file,
                progress=report,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; every container farm started was removed; the search so far is in "
            f"{out / 'tune.json'}; farm tune --resume (same arguments) goes on from there"
        ) from None
    sys.stdout.write(render(result.report))
    raise typer.Exit(result.exit_code)


def inspect(
    model: Annotated[Path, typer.Argument(help="the ONNX model")],
    target: TargetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (farm.inspect/1) instead of text")] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """The model's facts, and whether each target's runtime will load it, predicted from the runtime itself.

    Exits 5 when a selected target is predicted to fail, 0 otherwise (a target whose image is not built is unknown).
    """
    from farm.api import inspect as inspect_model
    from farm.controller.inspection import render

    found = inspect_model(model, targets=target or [], targets_file=targets_file, progress=to_stderr)
    sys.stdout.write(json.dumps(found.to_dict(), indent=2) + "\n" if as_json else render(found))
    raise typer.Exit(5 if found.predicted_failures else 0)


def optimize(
    model: Annotated[Path | None, typer.Argument(help="the ONNX model")] = None,
    out: Annotated[Path | None, typer.Argument(help="where to write the optimized model")] = None,
    passes: Annotated[
        list[str] | None,
        typer.Option(
            "--passes",
            metavar="<pass>",
            help="onnxoptimizer passes, repeatable or comma-separated; default: its fuse and elimination passes",
        ),
    ] = None,
    no_fold: Annotated[bool, typer.Option("--no-fold", help="rewrite only: no constant folding")] = False,
    list_passes: Annotated[bool, typer.Option("--list", help="list onnxoptimizer's passes and exit")] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="inputs to check the result on: FILE.npz or an ONNX test-data dir; default: synthetic"),
    ] = None,
    shape: ShapeOpt = None,
    samples: Annotated[int, typer.Option(min=1, help="samples to check on")] = 8,
    target: TargetOpt = None,
    targets_file: TargetsOpt = None,
) -> None:
    """Rewrite MODEL with onnxoptimizer (and fold constants), check it against MODEL, and save it to OUT with an IR
    version the targets read. Exits 5 when the result does not match the input."""
    from farm.controller import compat
    from farm.errors import EnvironmentProblem
    from farm.inputs.data import parse_shape_overrides, prepare_data
    from farm.model.inspect import inspect_model
    from farm.model.optimize import available_passes, check_passes, optimize_model
    from farm.model.rewrite import default_passes
    from farm.report.model import SYNTHETIC_WARNING

    if list_passes:
        defaults = set(default_passes())
        typer.echo("\n".join(f"{'*' if p in defaults else ' '} {p}" for p in available_passes()))
        typer.echo("* in the default set (onnxoptimizer's fuse and elimination passes)")
        return
    if model is None or out is None:
        raise BadInput("farm optimize needs MODEL and OUT", fix="run farm optimize model.onnx model.opt.onnx")
    chosen = tuple(p.strip() for item in passes or [] for p in item.split(",") if p.strip()) or None
    if chosen is not None:
        check_passes(chosen)  # bad input is refused before anything else is asked
    info = inspect_model(model)
    prepared = prepare_data(info, data=data, samples=samples, shapes=parse_shape_overrides(shape or [], model=info))
    max_ir: int | None = None
    try:
        fleet_ = open_fleet(targets_file)
        chosen_targets = [
            t for t in fleet_.config.select(target or []) if t.image == "cpu" and not t.waits_for_request(target or [])
        ]
        max_ir, unknown = compat.highest_ir_read_by_all(fleet_, chosen_targets)
        if unknown:
            typer.echo(
                f"note: the IR version {', '.join(unknown)} read is not known yet (build their images)", err=True
            )
    except EnvironmentProblem as exc:
        typer.echo(
            f"note: no engine to ask the targets' runtimes ({exc.message}); the model keeps its IR version", err=True
        )
    result = optimize_model(model, out, info, prepared, passes=chosen, fold=not no_fold, max_ir=max_ir)
    if prepared.synthetic:
        typer.echo(f"note: the check's {SYNTHETIC_WARNING}", err=True)
    typer.echo(result.summary())
    raise typer.Exit(0 if result.matches else 5)
