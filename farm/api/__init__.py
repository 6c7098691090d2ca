"""farm as a library: the functions the CLI is a thin layer on, for notebooks, scripts and pipelines.

Each takes the CLI's options as keyword arguments, with the same defaults and the same ``FARM_*`` environment
(README: Commands), and returns typed values: ``matrix`` a MatrixReport (the report), ``gate`` a
GateResult, ``build`` the images, ``targets`` their rows. Nothing is printed and nothing is written unless asked:
``out=`` writes the files the CLI writes (the CLI passes ``out=farm-report``), and progress goes to ``progress=``, a
function that takes each line or a reporter (the CLI's rich display). Bad input raises farm's exception classes
(farm.errors) with the CLI's one-line messages, never SystemExit; Ctrl-C raises KeyboardInterrupt after the same
cleanup as the CLI.

    import farm.api as farm
    report = farm.matrix("model.onnx", targets=["x86-avx2", "arm64"], data="inputs.npz")
    for target in report.targets:
        print(target.name, target.recommended)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

from farm.controller import progress as progress_
from farm.controller.fleet import BuildResults, Fleet, TargetRow
from farm.controller.inspection import Inspection
from farm.controller.jobs import JobSettings, parse_divergence
from farm.controller.matrix import MatrixResult
from farm.controller.progress import Reporter
from farm.controller.tune import TuneResult
from farm.errors import BadInput, EnvironmentProblem
from farm.gate import GateResult
from farm.job.report import TimingMode
from farm.job.spec import DEFAULT_FLOOR
from farm.report import REPORT_FILE
from farm.report.frame import MatrixReport, load_report

# What progress= takes: a function of each progress line, or a reporter (farm.controller.progress).
Progress = Callable[[str], None] | Reporter
PathLike = str | os.PathLike[str]
T = TypeVar("T")
_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")

__all__ = [
    "DryRun",
    "MatrixReport",
    "Progress",
    "build",
    "gate",
    "inspect",
    "load_report",
    "matrix",
    "matrix_run",
    "open_fleet",
    "resume_hint",
    "targets",
    "tune",
    "tune_run",
    "write_output",
]


@dataclass(frozen=True, kw_only=True)
class DryRun:
    """What `farm matrix --dry-run` wrote (each target's container settings or Kubernetes manifests), and notes."""

    written: tuple[Path, ...]
    notes: tuple[str, ...]


def matrix(model: PathLike | None = None, **options: Any) -> MatrixReport:
    """`farm matrix`: optimize, quantize and evaluate ``model`` (default: the bundled digits classifier) in every
    target, or in ``targets=[...]``; the cross-target report. Keyword arguments: matrix_run's."""
    if options.get("dry_run"):
        raise BadInput("matrix() runs the matrix", fix="call matrix_run(..., dry_run=True) for the plan alone")
    result = matrix_run(model, **options)
    assert isinstance(result, MatrixResult)
    return MatrixReport.of(result.report)


def matrix_run(
    model: PathLike | None = None,
    *,
    targets: Sequence[str] = (),
    data: PathLike | None = None,
    labels: PathLike | None = None,
    shapes: Sequence[str] = (),
    samples: int | None = None,
    outputs: Sequence[str] = (),
    metric: str | None = None,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    calibration: str = "minmax",
    opt_level: str = "all",
    threads: int | None = None,
    iterations: int | None = None,
    timing: str | None = None,
    timeout: float | None = None,
    keep: bool | None = None,
    label: str | None = None,
    resume: bool | None = None,
    tuned: PathLike | None = None,
    estimates: bool | None = None,
    profile: bool | None = None,
    cache: bool | None = None,
    variants: Sequence[str] = (),
    divergence: int | str | None = None,  # a count, "all" or "none"; None: FARM_DIVERGENCE, else 2
    targets_file: PathLike | None = None,
    out: PathLike | None = None,
    json_file: PathLike | None = None,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> MatrixResult | DryRun:
    """`farm matrix` with its exit status (docs/contracts.md section 4) and its notes: what the CLI prints. ``out``:
    the folder that gets report.json, report.md, report.html and junit.xml (None: none; the run's partial report
    lives in a temporary folder); ``json_file``: the report JSON as well. With ``dry_run``, nothing is built or run:
    what each target's backend would create is written into ``out``/dry-run/ (a DryRun says what)."""
    from farm.backend.engine import ENGINE_ERRORS, engine_lost
    from farm.controller.dryrun import dry_run as plan
    from farm.controller.jobs import InputFiles, job_environment, load_inputs
    from farm.controller.matrix import MatrixOptions, run_matrix, write_reports
    from farm.controller.variantpick import check_variants

    for name, value, valid in (
        ("--calibration", calibration, ("minmax", "entropy", "percentile")),
        ("--opt-level", opt_level, ("basic", "extended", "all")),
        ("--timing", timing := _env("FARM_TIMING", timing, str, "adaptive"), get_args(TimingMode)),
    ):
        if value not in valid:
            raise BadInput(f"{name} {value} is not valid", fix="use one of " + "|".join(valid))
    resume = _env("FARM_RESUME", resume, _bool, False)
    if dry_run and out is None:
        raise BadInput("dry_run needs out=", fix="pass the folder to write the plan into, e.g. out='farm-report'")
    if resume and out is None:
        raise BadInput("resume needs out=", fix="pass the folder of the report to resume, e.g. out='farm-report'")
    tuned = _env("FARM_TUNED", tuned, Path, None)
    timeout_s = _env("FARM_TIMEOUT", timeout, float, None)
    settings = JobSettings(
        **_measuring(threads, iterations, min_cosine, min_top1),
        calibration=calibration,
        optimization_level=opt_level,
        outputs=list(outputs),
        timeout_s=None if timeout_s is None else _at_least("--timeout", timeout_s, 1.0),
        keep_containers=_env("FARM_KEEP", keep, _bool, False),
        estimates=_env("FARM_ESTIMATES", estimates, _bool, True),
        profile=_env("FARM_PROFILE", profile, _bool, True),
        variants=check_variants(list(variants), tuned=tuned is not None),
        timing=cast(TimingMode, timing),
        divergence=parse_divergence(str(_env("FARM_DIVERGENCE", divergence, str, "2"))),
    )
    files = InputFiles(
        **_inputs(model, data, labels, shapes, samples),
        metric=metric,
        tuned=_path(tuned),
    )
    # Bad input is found before the engine is asked anything: it is the user's to fix, whatever the host.
    job_environment(os.environ)
    given = load_inputs(files, settings)
    with _reporting(progress) as reporter, _folder(out) as folder:
        fleet = _fleet(targets_file, reporter)
        options = MatrixOptions(
            settings=settings,
            targets=list(targets),
            out_dir=folder,
            label=_env("FARM_LABEL", label, str, None),
            resume=resume,
            cache=_env("FARM_CACHE", cache, _bool, True),
        )
        if dry_run:
            written, notes = plan(fleet, given, options)
            return DryRun(written=tuple(written), notes=tuple(notes))
        try:
            result = run_matrix(fleet, given, options, reporter)
        except (EnvironmentProblem, *ENGINE_ERRORS) as exc:  # e.g. the engine went away mid-run
            lost = exc if isinstance(exc, EnvironmentProblem) else engine_lost("farm matrix", fleet.engine.host, exc)
            raise EnvironmentProblem(f"{lost.message}{_partial(out)}", fix=lost.fix) from None
        if out is not None or json_file is not None:
            write_reports(result.report, folder, json_file=_path(json_file), fmt="json")
    return result


def tune(model: PathLike | None = None, **options: Any) -> Mapping[str, Any]:
    """`farm tune`: per target, the fastest mixed-precision model that holds the tolerance; its report
    (``farm.tune/1``, controller/tune-report.schema.json). Keyword arguments: tune_run's."""
    return tune_run(model, **options).report


def tune_run(
    model: PathLike | None = None,
    *,
    targets: Sequence[str] = (),
    data: PathLike | None = None,
    labels: PathLike | None = None,
    shapes: Sequence[str] = (),
    samples: int | None = None,
    budget: str | None = None,
    floor: float = DEFAULT_FLOOR,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    threads: int | None = None,
    iterations: int | None = None,
    out: PathLike | None = None,
    resume: bool = False,
    targets_file: PathLike | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """`farm tune` with its exit status. ``out``: the folder that gets tune.json and the tuned models (None: a
    temporary one)."""
    from farm.controller.jobs import InputFiles, load_inputs
    from farm.controller.tune import Budget, TuneOptions, run_tune

    if resume and out is None:
        raise BadInput("resume needs out=", fix="pass the folder of the search to resume, e.g. out='farm-tune'")
    settings = JobSettings(
        **_measuring(threads, iterations, min_cosine, min_top1),
    )
    files = InputFiles(
        **_inputs(model, data, labels, shapes, samples),
    )
    search = Budget.parse(budget)
    given = load_inputs(files, settings)
    with _reporting(progress) as reporter, _folder(out) as folder:
        fleet = _fleet(targets_file, reporter)
        options = TuneOptions(
            settings=settings,
            targets=list(targets),
            budget=search,
            floor=_at_least("--floor", floor, 0.0),
            out_dir=folder,
            resume=resume,
        )
        return run_tune(fleet, given, options, reporter)


def inspect(
    model: PathLike,
    *,
    targets: Sequence[str] = (),
    targets_file: PathLike | None = None,
    progress: Progress | None = None,
) -> Inspection:
    """`farm inspect`: the model's facts, and whether each target's runtime will load it, predicted from the
    runtime itself (``predicted_failures`` names the targets predicted to fail)."""
    from farm.controller.inspection import inspect_for_targets
    from farm.model.inspect import inspect_model

    path = Path(model)
    info = inspect_model(path)
    with _reporting(progress) as reporter:
        fleet = _fleet(targets_file, reporter)
    return inspect_for_targets(fleet, fleet.config.select(list(targets)), path, info)


def gate(
    report: PathLike,
    *,
    baseline: PathLike | None = None,
    policy: PathLike | None = None,
    junit: PathLike | None = None,
    markdown: PathLike | None = None,
) -> GateResult:
    """`farm gate`: the policy's rules on ``report`` (a report.json or its folder), against ``baseline`` where given.
    A failing rule is in the result (``passed``, ``having("failed")``), not raised; ``junit`` and ``markdown``
    write those renderings."""
    from farm.gate import render_junit, render_markdown, run_gate

    result = run_gate(
        Path(report), baseline=_path(baseline), policy=_env("FARM_GATE_POLICY", _path(policy), Path, None)
    )
    for path, render in ((junit, render_junit), (markdown, render_markdown)):
        if path is not None:
            write_output(Path(path), render(result))
    return result


def build(
    *, targets: Sequence[str] = (), targets_file: PathLike | None = None, progress: Progress | None = None
) -> BuildResults:
    """`farm build`: build (or reuse) the image of every target this host can run, or of ``targets``."""
    from farm.controller.fleet import build as build_fleet

    with _reporting(progress) as reporter:
        fleet = _fleet(targets_file, reporter)
        return build_fleet(fleet, list(targets), reporter)


def targets(*, targets_file: PathLike | None = None, progress: Progress | None = None) -> list[TargetRow]:
    """`farm targets`: each target with its mode on this host, the reason, its image and whether it is built."""
    from farm.controller.fleet import describe

    with _reporting(progress) as reporter:
        return describe(_fleet(targets_file, reporter))


def open_fleet(targets_file: PathLike | None = None, *, note: Callable[[str], None] | None = None) -> Fleet:
    """The targets, the engine and the host, after removing what farm processes that are gone (killed with SIGKILL)
    left behind; ``note`` hears what was removed."""
    from farm.controller import clean
    from farm.report._format import size

    opened = Fleet.open(_env("FARM_TARGETS", _path(targets_file), Path, None))
    say = note or _silent
    orphans = clean.plan(opened.engine, opened.config)
    if orphans.items:
        clean.execute(opened.engine, orphans.items)
        kinds = sorted({i.kind for i in orphans.items})
        say(
            f"removed {len(orphans.items)} {' and '.join(kinds)}(s) that farm processes which are gone left behind "
            f"({size(orphans.size_bytes)})"
        )
    for backend in {id(b): b for b in opened.backends.values() if b.reach.remote}.values():
        for removed in backend.sweep():
            say(f"removed {removed}, left behind by a farm process that is gone")
    return opened


def resume_hint(out: PathLike) -> str:
    """Where the report of a matrix that stopped is, and how to finish it: for the error that stopped it."""
    report = Path(out) / REPORT_FILE
    return f"the partial report is {report}; farm matrix --resume (same arguments) runs what is missing"


def _partial(out: PathLike | None) -> str:
    """resume_hint for an error's message; nothing when the report was in a temporary folder."""
    return "" if out is None else f"; {resume_hint(out)}"


def _fleet(targets_file: PathLike | None, reporter: Reporter) -> Fleet:
    """open_fleet, its notes to ``reporter``."""
    return open_fleet(targets_file, note=lambda text: reporter.note(f"note: {text}"))


def write_output(path: Path, text: str) -> None:
    """``text`` into ``path``, its folder made; a failure is one BadInput naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(
            f"writing {path} failed because {exc.strerror or exc}", fix="pass a path in a writable folder"
        ) from None


def _measuring(
    threads: int | None, iterations: int | None, min_cosine: float | None, min_top1: float | None
) -> dict[str, Any]:
    """The JobSettings that matrix and tune share: how to time and the tolerance, checked as the CLI checks them."""
    return {
        "threads": _at_least("--threads", _env("FARM_THREADS", threads, int, 1), 1),
        "iterations": None if iterations is None else _at_least("--iterations", iterations, 0),
        "cosine": _within("--min-cosine", _env("FARM_MIN_COSINE", min_cosine, float, 0.99), -1.0, 1.0),
        "top1_agreement": _within("--min-top1", _env("FARM_MIN_TOP1", min_top1, float, 0.99), 0.0, 1.0),
    }


def _inputs(
    model: PathLike | None,
    data: PathLike | None,
    labels: PathLike | None,
    shapes: Sequence[str],
    samples: int | None,
) -> dict[str, Any]:
    """The InputFiles that matrix and tune share."""
    return {
        "model": _path(model),
        "data": _path(data),
        "labels": _path(labels),
        "shapes": list(shapes),
        "samples": None if samples is None else _at_least("--samples", samples, 1),
    }


def _silent(line: str) -> None:
    pass


@contextmanager
def _reporting(progress: Progress | None) -> Iterator[Reporter]:
    """The reporter for ``progress=``: a reporter as given (its display is the caller's to start and stop, as the
    CLI does around the call), a function of each line through a QuietReporter, nothing for None."""
    if progress is None:
        yield progress_.QuietReporter(say=_silent)
    elif hasattr(progress, "step"):
        yield cast(Reporter, progress)
    else:
        yield progress_.QuietReporter(say=progress)


@contextmanager
def _folder(out: PathLike | None) -> Iterator[Path]:
    """``out``, or a temporary folder that is gone afterwards."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="farm-api-") as folder:
        yield Path(folder)


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _env(name: str, given: T | None, parse: Callable[[str], T], default: T) -> T:
    """``given``, else the environment variable ``name`` parsed as the CLI parses it, else ``default``."""
    if given is not None:
        return given
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise BadInput(f"{name}={raw} is not valid", fix=f"unset {name} or give it a valid value") from None


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def _at_least(name: str, value: T, least: float) -> T:
    if cast(float, value) < least:
        raise BadInput(f"{name} {value} is below {least:g}", fix=f"give {least:g} or more")
    return value


def _within(name: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise BadInput(
            f"{name} {value} is not within {low:g} to {high:g}", fix=f"give a value from {low:g} to {high:g}"
        )
    return value
