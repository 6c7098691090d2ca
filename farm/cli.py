"""Thin Typer commands: parse flags, call the core, render. Only ``main`` turns errors into exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

from farm import __version__, doctor, fleet, progress
from farm.errors import BadInput, FarmError, Interrupted
from farm.job.spec import DEFAULT_FLOOR

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="farm: how your ONNX model behaves on every hardware target, before you ship it.",
)

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

_debug = False


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", envvar="FARM_DEBUG", help="show tracebacks")] = False,
) -> None:
    global _debug
    _debug = debug


@app.command()
def version() -> None:
    """Print farm's version."""
    typer.echo(__version__)


@app.command("doctor")
def doctor_cmd(
    fix: Annotated[bool, typer.Option("--fix", help="install and register what is missing (run as root)")] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """Check the engine, QEMU, binfmt, CPU flags, GPU runtime and disk, and say what to do about each."""
    if fix:
        changes = doctor.fix()
        for change in changes or ["nothing to change: everything farm installs is already here"]:
            typer.echo(f"changed: {change}" if changes else change)
    checks = doctor.diagnose(targets_file=targets_file)
    marks = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
    rows = [[c.name, marks[c.level], c.detail + (f"\n  fix: {c.fix}" if c.fix else "")] for c in checks]
    typer.echo(tabulate(rows, headers=["check", "", "detail"], tablefmt="plain"))
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(3)


@app.command()
def targets(
    targets_file: TargetsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the targets with their mode on this host, reason, image tag and whether it is built."""
    rows = fleet.describe(_open_fleet(targets_file))
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [
        [
            r.name,
            r.platform,
            r.backend + ("" if r.reachable else " (unreachable)"),
            r.mode + (f" ({r.cpu_model})" if r.cpu_model else ""),
            r.reason or "",
            r.image or "(wheels not downloaded yet)",
            "yes" if r.built else "no",
        ]
        for r in rows
    ]
    typer.echo(
        tabulate(
            table,
            headers=["target", "platform", "runs on", "mode", "reason", "image", "built"],
            maxcolwidths=[None, None, 24, None, 40, None, None],
        )
    )


@app.command()
def build(
    targets_file: TargetsOpt = None,
    target: TargetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build (or reuse) the image of every target this host can run; gpu targets only when named."""
    results = fleet.build(_open_fleet(targets_file), target or [], quiet=quiet)
    # How each image got where its target runs: built, cached, tagged (same content, another name) or shipped.
    rows = [[b.target, b.tag, f"{b.size_bytes / 2**20:.0f} MiB", b.origin, f"{b.seconds:.1f}"] for b in results.built]
    rows += [[name, "-", "-", f"skipped: {why}", "-"] for name, why in results.skipped]
    typer.echo(
        tabulate(rows, headers=["target", "image", "size", "", "seconds"], maxcolwidths=[None, None, None, 50, None])
    )


@app.command()
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
    targets_file: TargetsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Optimize, quantize and evaluate MODEL in every target; print the cross-target matrix."""
    from farm.backend.engine import ENGINE_ERRORS, engine_lost
    from farm.errors import EnvironmentProblem
    from farm.matrix import MatrixOptions, load_inputs, run_matrix, write_reports
    from farm.matrix import dry_run as plan_dry_run
    from farm.report import FORMATS, REPORT_FILE

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt} is not a format farm writes", fix="use one of " + "|".join(FORMATS))
    for name, value, valid in (
        ("--calibration", calibration, ("minmax", "entropy", "percentile")),
        ("--opt-level", opt_level, ("basic", "extended", "all")),
    ):
        if value not in valid:
            raise BadInput(f"{name} {value} is not valid", fix="use one of " + "|".join(valid))
    options = MatrixOptions(
        model=model,
        targets=target or [],
        data=data,
        labels=labels,
        shapes=shape or [],
        samples=samples,
        calibration=calibration,
        optimization_level=opt_level,
        threads=threads,
        iterations=iterations,
        cosine=min_cosine,
        top1_agreement=min_top1,
        timeout_s=timeout,
        keep_containers=keep,
        out_dir=out,
        outputs=output or [],
        metric=metric,
        label=label,
        resume=resume,
        tuned=tuned,
    )
    # Bad input is found before the engine is asked anything: it is the user's to fix, whatever the host.
    given = load_inputs(options)
    fleet_ = _open_fleet(targets_file)
    if dry_run:
        written, notes = plan_dry_run(fleet_, given, options)
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo("\n".join(f"wrote {path}" for path in written) or "nothing to write: no selected target can run")
        return
    partial = f"the partial report is {out / REPORT_FILE}; farm matrix --resume (same arguments) runs what is missing"
    try:
        with progress.reporter(quiet) as report:
            result = run_matrix(fleet_, given, options, report)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; every container farm started was removed; {partial}") from None
    except (EnvironmentProblem, *ENGINE_ERRORS) as exc:  # e.g. the engine went away mid-run
        lost = exc if isinstance(exc, EnvironmentProblem) else engine_lost("farm matrix", fleet_.engine.host, exc)
        raise EnvironmentProblem(f"{lost.message}; {partial}", fix=lost.fix) from None
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    text = write_reports(result.report, out, json_file=json_file, fmt=fmt)
    sys.stdout.write(text)
    raise typer.Exit(result.exit_code)


@app.command()
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
    from farm.matrix import MatrixOptions, load_inputs
    from farm.tune import Budget, TuneOptions, render, run_tune

    evaluation = MatrixOptions(
        model=model,
        targets=target or [],
        data=data,
        labels=labels,
        shapes=shape or [],
        samples=samples,
        threads=threads,
        iterations=iterations,
        cosine=min_cosine,
        top1_agreement=min_top1,
        out_dir=out,
    )
    options = TuneOptions(evaluation=evaluation, budget=Budget.parse(budget), floor=floor, out_dir=out, resume=resume)
    given = load_inputs(evaluation)
    fleet_ = _open_fleet(targets_file)
    try:
        with progress.reporter(quiet) as report:
            result = run_tune(fleet_, given, options, report)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; every container farm started was removed; the search so far is in "
            f"{out / 'tune.json'}; farm tune --resume (same arguments) goes on from there"
        ) from None
    sys.stdout.write(render(result.report))
    raise typer.Exit(result.exit_code)


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="the ONNX model")],
    target: TargetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (farm.inspect/1) instead of text")] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """The model's facts, and whether each target's runtime will load it, predicted from the runtime itself.

    Exits 5 when a selected target is predicted to fail, 0 otherwise (a target whose image is not built is unknown).
    """
    from farm.inspect import inspect_model
    from farm.inspection import inspect_for_targets, render

    info = inspect_model(model)
    fleet_ = _open_fleet(targets_file)
    found = inspect_for_targets(fleet_, fleet_.config.select(target or []), model, info)
    sys.stdout.write(json.dumps(found.to_dict(), indent=2) + "\n" if as_json else render(found))
    raise typer.Exit(5 if found.predicted_failures else 0)


@app.command()
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
    from farm import compat
    from farm.data import parse_shape_overrides, prepare_data
    from farm.errors import EnvironmentProblem
    from farm.inspect import inspect_model
    from farm.optimize import available_passes, check_passes, optimize_model
    from farm.report.model import SYNTHETIC_WARNING
    from farm.rewrite import default_passes

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
        fleet_ = _open_fleet(targets_file)
        chosen_targets = [t for t in fleet_.config.select(target or []) if t.image == "cpu" and not t.on_request]
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


@app.command()
def gate(
    report: Annotated[Path, typer.Argument(help="report.json of farm matrix, or the folder that holds it")],
    baseline: Annotated[
        Path | None, typer.Option(help="an earlier report.json (or its folder) to compare with")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            envvar="FARM_GATE_POLICY", help="gate.toml; default: the default policy (docs/contracts.md section 5)"
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="also write JUnit XML: one testcase per rule and target")] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="also write Markdown; $GITHUB_STEP_SUMMARY, when set, gets it appended")
    ] = None,
) -> None:
    """Gate a release on a report: required targets ran, accuracy holds, and against --baseline no accuracy drop,
    latency regression beyond noise, new failure or unannounced change of recommendation.

    Exits 0 when every rule holds, 6 when one fails, 2 on bad input.
    """
    from farm.errors import GateFailed
    from farm.gate import render_junit, render_markdown, render_text, run_gate

    result = run_gate(report, baseline=baseline, policy=policy)
    summary = render_markdown(result)
    for path, text in ((junit, render_junit(result)), (markdown, summary)):
        if path is not None:
            _write_output(path, text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as stream:
            stream.write(summary)
    sys.stdout.write(render_text(result))
    if not result.passed:
        failed = result.having("failed")
        raise GateFailed(
            f"the gate failed on {len(failed)} check(s), the first: {failed[0].message}",
            fix="fix the model or the targets, or change the policy (--policy gate.toml) if the change is intended",
        )


@app.command("report")
def report_cmd(
    paths: Annotated[list[Path], typer.Argument(help="report.json files, or folders searched for them (a history)")],
    out: Annotated[Path, typer.Option(help="where index.html, trend.json and summary.md go")] = Path("farm-trend"),
    policy: Annotated[
        Path | None,
        typer.Option(envvar="FARM_GATE_POLICY", help="the gate policy that judges the changes since the run before"),
    ] = None,
) -> None:
    """One report over many runs: the latest matrix, what changed since the run before, and per target and
    variant the trend of accuracy and latency (index.html, self-contained; trend.json; summary.md)."""
    from farm.gate import Policy
    from farm.gate.trend import collect, write_trend

    rules = Policy.load(policy)
    history = collect(paths)
    for source, why in history.unreadable:
        typer.echo(f"note: left out {source}: {why}", err=True)
    changes = history.changes(rules)
    try:
        written = write_trend(history, out, changes)
    except OSError as exc:
        raise BadInput(
            f"writing the trend report to {out} failed because {exc.strerror or exc}",
            fix="pass --out a writable folder",
        ) from None
    failed = [] if changes is None else changes.having("failed")
    typer.echo(
        f"{len(history.runs)} run(s), latest {history.latest.name}: "
        + ("first run" if changes is None else f"{len(failed)} regression(s) since the run before")
        + f"; wrote {', '.join(str(p) for p in written)}"
    )


@app.command("clean")
def clean_cmd(
    images: Annotated[bool, typer.Option("--images", help="also farm's images (target images and bases)")] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache", help="also farm's caches (wheels, site-packages, capabilities, run folders of unknown owner)"
        ),
    ] = False,
    everything: Annotated[bool, typer.Option("--all", help="containers, run folders, images and caches")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be removed, remove nothing")] = False,
    targets_file: TargetsOpt = None,
) -> None:
    """Remove what farm left behind: containers and run folders of farm processes that are gone, and with
    --images, --cache or --all, farm's images and caches. What a running farm uses is kept, and said so."""
    from farm import clean
    from farm.backend.engine import Engine
    from farm.config import load_config
    from farm.report._format import size

    engine = Engine.connect()
    plan = clean.plan(engine, load_config(targets_file), images=images or everything, cache=cache or everything)
    verb = "would remove" if dry_run else "removing"
    for item in plan.items:
        typer.echo(
            f"{verb} {item.kind} {item.name}"
            + (f" ({size(item.size_bytes)})" if item.size_bytes else "")
            + f": {item.why}"
        )
    for note in plan.kept:
        typer.echo(f"kept {note}")
    if not dry_run:
        clean.execute(engine, plan.items)
    typer.echo(f"{'would free' if dry_run else 'freed'} {size(plan.size_bytes)} ({len(plan.items)} item(s))")


def _open_fleet(targets_file: Path | None) -> fleet.Fleet:
    """The fleet, after removing what farm processes that are gone (killed with SIGKILL) left behind."""
    from farm import clean
    from farm.report._format import size

    opened = fleet.Fleet.open(targets_file)
    orphans = clean.plan(opened.engine, opened.config)
    if orphans.items:
        clean.execute(opened.engine, orphans.items)
        kinds = sorted({i.kind for i in orphans.items})
        typer.echo(
            f"note: removed {len(orphans.items)} {' and '.join(kinds)}(s) that farm processes which are gone "
            f"left behind ({size(orphans.size_bytes)})",
            err=True,
        )
    for backend in {id(b): b for b in opened.backends.values() if b.reach.remote}.values():
        for removed in backend.sweep():
            typer.echo(f"note: removed {removed}, left behind by a farm process that is gone", err=True)
    return opened


def _write_output(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(
            f"writing {path} failed because {exc.strerror or exc}", fix="pass a path in a writable folder"
        ) from None


def _terminated(signum: int, frame: object) -> None:
    # `timeout`, a cancelled CI job and `docker stop` send SIGTERM: clean up exactly as for Ctrl-C.
    raise KeyboardInterrupt


def main() -> None:
    from farm.backend.engine import ENGINE_ERRORS, engine_lost

    signal.signal(signal.SIGTERM, _terminated)
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting with it, and typer
        # turns Ctrl-C into a returned 130 after the command's context managers have removed its containers.
        code = app(standalone_mode=False)
        if code == Interrupted.exit_code:
            _fail(Interrupted("interrupted; every container farm started was removed"))
        sys.exit(code if isinstance(code, int) else 0)
    except FarmError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # pressed outside a command, e.g. while typer parses the arguments
        _fail(Interrupted("interrupted; every container farm started was removed"))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail(Interrupted("aborted"))
    except ENGINE_ERRORS as exc:  # the engine went away outside a container run (a build, a listing)
        _fail(engine_lost("talking to the engine", os.environ.get("DOCKER_HOST") or "the default socket", exc))
    except Exception as exc:  # click's usage errors and anything unexpected
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if _debug or os.environ.get("FARM_DEBUG"):
            raise
        typer.echo(
            f"error: {type(exc).__name__}: {exc} (this is a bug in farm; rerun with --debug and report it)", err=True
        )
        sys.exit(1)


def _is_usage_error(exc: Exception) -> bool:
    """click's ClickException, whichever click raised it: typer 0.29 vendors its own (typer._click) and no longer
    installs click, so farm recognises the class by its name and shape rather than by importing click."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return (
        "ClickException" in names
        and callable(getattr(exc, "show", None))
        and isinstance(getattr(exc, "exit_code", None), int)
    )


def _fail(exc: FarmError) -> None:
    if _debug or os.environ.get("FARM_DEBUG"):
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)
