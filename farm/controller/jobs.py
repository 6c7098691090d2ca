"""Running a job in a target: the one launcher `farm matrix`, `farm tune` and the scripts share.

A run stages its inputs once (the model in a folder of its own with its external data, the rewrite, the data and
labels, the metric, the tuned models) in a folder every job reads, writes each job's spec beside them, runs
``python -m farm.job`` in the target's container through the target's backend (which applies the start mode:
native, masked or emulated), and reads what the job wrote. What a spec takes from the command line is one
``JobSettings``, the same for every target of a run.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from farm.backend import runner
from farm.backend.engine import STAGE_LABEL, Mount, RunResult, RunSpec
from farm.controller import clean
from farm.controller.fleet import Fleet
from farm.controller.progress import Step
from farm.controller.tuned import TunedModels, load_tuned
from farm.controller.variantpick import missing_picks, picked, skipped_baselines
from farm.errors import BadInput, ConfigError, EnvironmentProblem
from farm.host import turns
from farm.host.probe import Placement
from farm.inputs.data import DataSource, PreparedData, parse_shape_overrides, prepare_data
from farm.inputs.usermetric import MetricFile, check_metric, check_outputs
from farm.job.capacity import WORKERS_ENV, BadWorkers, workers_override
from farm.job.codec import encode
from farm.job.divergence import THRESHOLD_DB
from farm.job.estimate.costs import cost_model_for
from farm.job.estimate.marks import COUNTS_FILE
from farm.job.report import TimingMode
from farm.job.result import write_json_atomic
from farm.job.spec import (
    Arch,
    Calibration,
    DivergenceSpec,
    Estimate,
    Level,
    MetricRef,
    Mode,
    ProfileSpec,
    Spec,
    SpecTarget,
    SpecTolerance,
    Stage,
    Timing,
    Tune,
    TunedModel,
)
from farm.job.tunecontract import CalibrationMethod
from farm.job.variants import SUBGRAPH_VARIANT
from farm.model.inspect import ModelInfo, inspect_model
from farm.model.rewrite import rewrite_model
from farm.models import default_model
from farm.targets.config import Target

# The run folder's input folder, which every job of the run reads (mounted read-only at IN).
INPUT_DIR = "in"
IN = "/farm/in"
OUT = "/farm/out"
METRIC_DIR = "metric"
MODEL_DIR = "model"
MODEL_FILE = "model.onnx"
# Timed runs are split into this many rounds, alternating between variants; a speed claim must hold in every one
# (with 5, identical graphs were called faster in 1 of 100 runs in scripts/bench-noise; with 10, in none).
TIMING_ROUNDS = 10
NATIVE_ITERATIONS = 200
# With either, MLAS's u8s8 kernels use VPDPBUSD, which does not saturate; without, VPMADDUBSW, which can.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
# Under QEMU timings say nothing, so an emulated target spends its time on accuracy alone ...
EMULATED_ITERATIONS = 0
# ... or, under farm's counting QEMU, on counting each variant's instructions over a few marked runs (counts barely
# move between runs), stopping at this share of the target's budget, so the job still ends on its own with every
# accuracy figure; the deployment profile waits for no profile past the same share.
ESTIMATE_RUNS = 3
ESTIMATE_SHARE = 0.8


# farm bisect's comparison, in farm bisect and in the evaluate stage (--divergence): the samples it compares when the
# data has more (a divergence shows on a few inputs, and under QEMU each costs), the out-of-tolerance variants per
# target it looks at by default, and the share of the target's memory one sample's marked values may take (the rest
# holds fp32's session, the variant's, one group's and the interpreter: docs/contracts.md section 7).
DIVERGENCE_SAMPLES = 8
DIVERGENCE_COUNT = 2
MARKED_MEMORY_SHARE = 4


def parse_divergence(text: str) -> int | None:
    """``--divergence``: a count, ``all`` (None) or ``none`` (0); else one BadInput naming the flag."""
    if text == "all":
        return None
    if text == "none":
        return 0
    if text.isdigit():
        return int(text)
    raise BadInput(f"--divergence {text} is not a count", fix="give N (e.g. 2), all or none")


def marked_limit(target: Target) -> int:
    """The bytes one sample's marked tensors may take in ``target`` (farm.job.divergence)."""
    return max(1 << 20, target.memory_bytes // MARKED_MEMORY_SHARE)


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """What a job's spec and container take from the command line, the same for every target of a run."""

    threads: int = 1
    # Timed runs per variant on native and masked targets; None: NATIVE_ITERATIONS.
    iterations: int | None = None
    calibration: str = "minmax"
    optimization_level: str = "all"
    cosine: float = 0.99
    top1_agreement: float = 0.99
    # The outputs that make the verdict (--output); empty: every float output.
    outputs: Sequence[str] = ()
    # Seconds per container; None: each target's budget_s from targets.toml.
    timeout_s: float | None = None
    keep_containers: bool = False
    # Emulated targets run under farm's counting QEMU where it is built (--no-estimates: accuracy only, faster).
    estimates: bool = True
    # Every evaluate spec asks for the deployment profile (--no-profile: none, faster).
    profile: bool = True
    # --variant: the only variants to evaluate (fp32 always; farm/controller/variantpick.py); empty: every variant.
    variants: tuple[str, ...] = ()
    # --timing: how the evaluate stage's timing rounds end (docs/contracts.md section 2).
    timing: TimingMode = "adaptive"
    # --divergence: how many out-of-tolerance variants per target get where they leave fp32 (None: every one;
    # 0: none).
    divergence: int | None = DIVERGENCE_COUNT

    @property
    def native_iterations(self) -> int:
        """Timed runs per variant on native and masked targets."""
        return NATIVE_ITERATIONS if self.iterations is None else self.iterations

    def budget(self, target: Target) -> float:
        """The seconds a container of ``target`` gets: --timeout, else the target's budget_s."""
        return self.timeout_s if self.timeout_s is not None else target.budget_s


@dataclass(frozen=True, kw_only=True)
class InputFiles:
    """The model and its data as the command line names them; no model: farm's bundled one."""

    model: Path | None = None
    data: Path | None = None
    labels: Path | None = None
    shapes: Sequence[str] = ()
    samples: int | None = None
    # --metric FILE.py:FUNCTION, the user's own verdict.
    metric: str | None = None
    # --tuned: a farm tune output folder, whose tuned model of each target is evaluated there as the "tuned" variant.
    tuned: Path | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class JobInputs:
    """The model and its data, read and checked on the host before any engine is involved."""

    model: Path
    info: ModelInfo
    data: PreparedData
    metric: MetricFile | None = None
    tuned: TunedModels | None = None


def load_inputs(files: InputFiles, settings: JobSettings) -> JobInputs:
    """Every problem with the model, --data, --labels, --shape, --output, --metric or --tuned surfaces here, as one
    BadInput naming the file or flag."""
    model_path, data_path, labels_path, source = _located(files)
    info = inspect_model(model_path)
    check_outputs(settings.outputs, info)
    metric = None if files.metric is None else check_metric(files.metric)
    data = prepare_data(
        info,
        data=data_path,
        labels=labels_path,
        samples=files.samples,
        source=source,
        shapes=parse_shape_overrides(files.shapes, model=info),
    )
    tuned = None if files.tuned is None else load_tuned(files.tuned, info)
    return JobInputs(model=model_path, info=info, data=data, metric=metric, tuned=tuned)


def _located(files: InputFiles) -> tuple[Path, Path | None, Path | None, DataSource | None]:
    """The model, data and labels to use, and the data's source when it is farm's own (else it is inferred)."""
    if files.model is not None:
        return files.model, files.data, files.labels, None
    bundled = default_model()
    if files.data is not None:
        return bundled.model, files.data, files.labels, None
    return bundled.model, bundled.data, files.labels or bundled.labels, "bundled"


def new_run_folder(cache_dir: Path, kind: str | None = None) -> Path:
    """A run's own work folder in the cache, with the empty input folder (``in``) its jobs read, marked as this
    process's so that `farm clean` tells it from what a killed run left."""
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    work = cache_dir / clean.RUNS_DIR / "-".join(p for p in (stamp, kind, uuid.uuid4().hex[:6]) if p)
    (work / INPUT_DIR).mkdir(parents=True)
    clean.mark_run_folder(work)
    return work


def stage_inputs(inputs: Path, given: JobInputs, fleet: Fleet) -> list[str]:
    """The model (with its external data), its rewrite, the data and the metric, in the folder every job reads;
    returns the rewrite's warnings."""
    model = given.model
    # The model gets a folder of its own, so that its external data files keep the relative names the model gives
    # them without meeting anything farm writes (the rewrite's own "model.onnx.data", torch's default name too).
    folder = inputs / MODEL_DIR
    folder.mkdir()
    # Copies, never hard links: onnx refuses external data with several links (a hard-link attack guard), and a
    # link would let a write into the run reach the user's own file.
    shutil.copyfile(model, folder / MODEL_FILE)
    for location in given.info.external_data:
        staged = folder / location
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.parent / location, staged)
    rewritten = rewrite_model(model, inputs / "rewritten.onnx", cache_dir=fleet.config.cache_dir / "rewritten")
    if given.metric is not None:
        (inputs / METRIC_DIR).mkdir()
        shutil.copyfile(given.metric.path, inputs / METRIC_DIR / given.metric.path.name)
    given.data.write(inputs)
    if given.tuned is not None:
        given.tuned.stage(inputs)
    open_up(inputs)
    return [w for w in (rewritten.note, rewritten.warning) if w]


def toolchain(target: Target) -> str:
    """What decides the int8 artifacts: the runtime's quantizer and the onnx beside it, not the CPU."""
    return " ".join((target.runtime, *target.packages))


def candidates_for(target: Target, info: ModelInfo, settings: JobSettings) -> list[str]:
    """The target's candidates, plus dynamic quantization inside subgraphs where the model keeps compute there;
    with --variant, only the named ones among them."""
    candidates = list(target.candidates)
    if info.quantizable_in_subgraphs and "u8s8-dynamic" in candidates and SUBGRAPH_VARIANT not in candidates:
        candidates.insert(candidates.index("u8s8-dynamic") + 1, SUBGRAPH_VARIANT)
    return picked(candidates, settings.variants)


def pick_warnings(targets: Sequence[Target], info: ModelInfo, settings: JobSettings) -> list[str]:
    """What the report says of the int8 variants --variant named that some of ``targets`` do not evaluate."""
    unpicked = replace(settings, variants=())
    return missing_picks({t.name: candidates_for(t, info, unpicked) for t in targets}, settings.variants)


def profile_threads(target: Target, settings: JobSettings) -> tuple[int, ...]:
    """The thread counts the profile times: the target's ``threads`` with --threads's count added, so the count the
    recommendation uses is always measured, ascending."""
    return tuple(sorted({*target.threads, settings.threads}))


def job_spec(
    target: Target,
    placement: Placement,
    stage: Stage,
    candidates: Sequence[str],
    settings: JobSettings,
    *,
    inputs: Path,
    host_flags: frozenset[str],
    metric: MetricFile | None = None,
    artifacts: str | None = None,
    tuned: TunedModel | None = None,
    tune: Tune | None = None,
) -> Spec:
    """The job's spec (docs/contracts.md section 1), paths relative to ``inputs``; it names labels and int8
    artifacts when the input folder holds them, the target's tuned model when ``farm matrix --tuned`` gave one, and
    the search's settings for the tune stage. Raises SpecError on what the job would refuse."""
    emulated = placement.mode == "emulated"
    counted = placement.counting is not None and settings.estimates and stage == "evaluate"
    cost_model = cost_model_for(target.arch, placement.cpu_model) if counted else None
    # --iterations is for the targets whose timings mean something; under QEMU it would only eat the budget.
    iterations = EMULATED_ITERATIONS if emulated else settings.native_iterations
    x86_vnni: bool | None = None
    if target.arch == "x86_64":
        # A tier that names its features has VNNI or not by definition; a bare native target has what this CPU has.
        tier = set(target.cpu_features) if target.cpu_features or placement.mode != "native" else set(host_flags)
        x86_vnni = bool(tier & VNNI_FLAGS)
    return Spec(
        stage=stage,
        target=SpecTarget(
            name=target.name,
            platform=target.platform,
            # farm/targets/config.py knows only these platforms' architectures; a placement not "unavailable" runs.
            arch=cast(Arch, target.arch),
            mode=cast(Mode, placement.mode),
            cpu_model=placement.cpu_model,
            providers=tuple(target.providers),
            x86_vnni=x86_vnni,
            cpu_unseen=tuple(placement.unseen),
        ),
        model=Path(MODEL_DIR, MODEL_FILE),
        rewritten=Path("rewritten.onnx"),
        inputs=Path("inputs.npz"),
        labels=Path("labels.npy") if (inputs / "labels.npy").is_file() else None,
        artifacts=Path(artifacts) if artifacts and (inputs / artifacts).is_dir() else None,
        candidates=tuple(candidates),
        # The command line checked --calibration and --opt-level against the same names (farm/cli/evaluate.py).
        calibration=Calibration(method=cast(CalibrationMethod, settings.calibration), samples=64),
        optimization_level=cast(Level, settings.optimization_level),
        threads=settings.threads,
        timing=Timing(
            warmup=0 if emulated else 10,
            iterations=max(0, min(iterations, 100_000)),
            rounds=TIMING_ROUNDS,
            # Only a timed evaluate stage times adaptively: the tune search's fixed rounds keep its trials comparable,
            # and the prepare stage and emulated targets time nothing, so their specs (and --resume's key, and what
            # else keys on them) do not change with --timing.
            mode=settings.timing if stage == "evaluate" and iterations > 0 else "fixed",
        ),
        tolerance=SpecTolerance(cosine=settings.cosine, top1_agreement=settings.top1_agreement),
        mitigations=("x64quantprecision",) if x86_vnni is False else (),
        outputs=tuple(settings.outputs) or None,
        metric=None if metric is None else MetricRef(file=Path(METRIC_DIR, metric.path.name), function=metric.function),
        tune=tune,
        tuned=tuned,
        estimate=None
        if cost_model is None
        else Estimate(
            cost_model=cost_model.name, runs=ESTIMATE_RUNS, budget_s=settings.budget(target) * ESTIMATE_SHARE
        ),
        profile=ProfileSpec(
            threads=profile_threads(target, settings), budget_s=settings.budget(target) * ESTIMATE_SHARE
        )
        if settings.profile and stage == "evaluate"
        else None,
        skip=skipped_baselines(settings.variants) if stage == "evaluate" else (),
        divergence=DivergenceSpec(
            count=settings.divergence,
            threshold_db=THRESHOLD_DB,
            limit_bytes=marked_limit(target),
            samples=DIVERGENCE_SAMPLES,
        )
        if stage == "evaluate" and settings.divergence != 0
        else None,
    )


def spec_file(stage: str, target: str) -> str:
    """The name of a stage's spec in the input folder: one per stage and target, so none overwrites another."""
    return f"spec-{stage}-{target}.json"


def container(
    target: Target,
    placement: Placement,
    tag: str,
    stage: str,
    inputs: Path,
    out: Path,
    *,
    timeout_s: float,
    keep: bool = False,
    cache_dir: Path | None = None,
    plan_only: bool = False,
    counted: bool = False,
) -> RunSpec:
    """The container of one stage's job, as the backend starts it in the placement's mode (farm/backend/runner.py);
    ``counted``: under the placement's counting QEMU (its spec asks for an estimate)."""
    return runner.run_spec(
        target,
        placement,
        tag,
        ["-m", "farm.job", f"{IN}/{spec_file(stage, target.name)}", OUT],
        environment=job_environment(os.environ),
        mounts=[Mount(source=inputs, target=IN, read_only=True), Mount(source=out, target=OUT, read_only=False)],
        timeout_s=timeout_s,
        memory=target.memory,
        keep=keep,
        labels={STAGE_LABEL: stage},
        cache_dir=cache_dir,
        plan_only=plan_only,
        counting=placement.counting if counted else None,
        counts_file=f"{OUT}/{COUNTS_FILE}",
    )


def job_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What the job's container gets from farm's environment: FARM_JOB_WORKERS (farm.job.capacity), checked here,
    so that a bad value stops farm before any container starts (ConfigError, exit 2)."""
    try:
        workers = workers_override(environ)
    except BadWorkers as exc:
        raise ConfigError(str(exc), fix=f"e.g. {WORKERS_ENV}=1, or unset it") from exc
    return {} if workers is None else {WORKERS_ENV: str(workers)}


def run_job(
    fleet: Fleet,
    target: Target,
    tag: str,
    spec: Spec,
    inputs: Path,
    out: Path,
    *,
    timeout_s: float,
    keep: bool,
    on_line: Callable[[str], None],
) -> RunResult:
    """``python -m farm.job`` in the target's container, with ``spec`` beside the inputs it names.

    A job the counting QEMU did not get going (it wrote no result: a broken bundle, a library missing) runs again
    without it, so the target keeps its accuracy, and its result says why it has no estimate."""

    def start(attempt: Spec) -> RunResult:
        stage = attempt.stage
        path = inputs / spec_file(stage, target.name)
        path.write_text(json.dumps(encode(attempt), indent=2))
        path.chmod(0o644)  # the container's unprivileged user reads it whatever this process's umask is
        placement = fleet.placements[target.name]
        try:
            started = container(
                target,
                placement,
                tag,
                stage,
                inputs,
                out,
                timeout_s=timeout_s,
                keep=keep,
                cache_dir=fleet.config.cache_dir,
                counted=attempt.estimate is not None,
            )
        except EnvironmentProblem as exc:  # this target cannot be masked here; the others still run
            return RunResult.engine_failure(f"could not be masked: {exc}")
        backend = fleet.backend(target)
        # A job whose figures are this host's timings has the host to itself (farm.host.turns); others share it.
        alone = stage in TIMED_STAGES and placement.on_this_cpu and not backend.reach.remote
        try:
            with turns.turn(f"farm {stage} {target.name}", alone=alone, on_wait=lambda line: on_line(f"farm: {line}")):
                return backend.run(started, on_line=on_line)
        except EnvironmentProblem as exc:
            if not backend.reach.remote:
                raise  # the controller's own engine: nothing else can run either
            # A remote engine or cluster that went away fails its own targets; the others go on.
            return RunResult.engine_failure(f"lost its backend: {exc.message}")

    result = start(spec)
    if spec.estimate is None or (out / "result.json").is_file() or result.timed_out or result.engine_error:
        return result
    why = NO_START.format(what=last_line(result.log_tail))
    result = start(replace(spec, estimate=None))
    written = read_json(out / "result.json")
    if written:
        written["warnings"] = [*written.get("warnings", []), why]
        write_json_atomic(out / "result.json", written)
    return result


# The stages whose jobs time their variants (prepare quantizes, and times nothing).
TIMED_STAGES = frozenset({"evaluate", "tune"})
# The one line a target's warnings carry when the counting QEMU could not start its job.
NO_START = "no speed estimate: the counting QEMU did not start the job ({what}), so it ran again without it"


def stage_lines(step: Step) -> Callable[[str], None]:
    """The job announces its stages with lines that start with 'farm:'; everything else is detail."""

    def sink(line: str) -> None:
        if line.startswith("farm:"):
            step.stage(line[5:].strip())
        else:
            step.line(line)

    return sink


def job_out_dir(work: Path, name: str) -> Path:
    out = work / f"out-{name}"
    out.mkdir()
    # The container runs as an unprivileged user that must be able to write here.
    out.chmod(0o777)
    return out


def open_up(directory: Path) -> None:
    """Make the input tree readable by the container's unprivileged user."""
    for root, dirs, files in os.walk(directory):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)


def read_json(path: Path) -> dict[str, Any]:
    """What a job wrote, or an empty dict when it wrote nothing readable (it died, or never got that far)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def last_line(text: str) -> str:
    """A log's last line that says something, for a one-line reason."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
