"""`farm matrix`: optimize, quantize and evaluate the model inside every selected target, into one report.

The plan: inspect the model and its data on the host, rewrite the graph once (onnxoptimizer), make the int8
artifacts once in a native container (``prepare``), then evaluate in every target, native ones first. Each target's
result is written as soon as it arrives, and one target's failure never loses another's results.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import farm
from farm.backend.engine import ENGINE_ERRORS, RunResult, engine_lost
from farm.controller import compat, crosscheck
from farm.controller.artifacts import make_artifacts
from farm.controller.bisect import parting, where_fp32_parts
from farm.controller.fleet import Fleet, ensure_images, no_estimate
from farm.controller.jobs import (
    INPUT_DIR,
    TIMING_ROUNDS,
    JobInputs,
    JobSettings,
    candidates_for,
    job_out_dir,
    job_spec,
    new_run_folder,
    pick_warnings,
    read_json,
    run_job,
    stage_inputs,
    stage_lines,
)
from farm.controller.progress import Reporter
from farm.controller.resume import Earlier, read_earlier, resume_key
from farm.errors import BadInput, BuildFailed, EnvironmentProblem, FarmError, TargetFailed
from farm.host.files import file_sha256
from farm.host.probe import Placement
from farm.job.codec import ContractError, decode, encode, json_object
from farm.job.report import (
    SCHEMA_ID,
    HostSummary,
    LoadRefusal,
    RunInfo,
    RunSettings,
    TargetBackend,
    TargetResult,
    Tolerance,
)
from farm.job.result import write_text_atomic
from farm.model.inspect import NodeUse, node_uses
from farm.report import REPORT_FILE, Report, render
from farm.report.schema import InvalidReport, validate
from farm.targets.config import Target


@dataclass(frozen=True, kw_only=True)
class MatrixOptions:
    settings: JobSettings = field(default_factory=JobSettings)
    targets: Sequence[str] = ()
    out_dir: Path = Path("farm-report")
    # --label: what this run is (a commit, a release), kept in the report's run block for trends and gates.
    label: str | None = None
    # --resume: reuse each target's result from the report already in out_dir when nothing it depends on changed.
    resume: bool = False
    # --no-cache (FARM_CACHE=0): make the int8 artifacts even where farm's artifact cache has them, and keep none.
    cache: bool = True


@dataclass(kw_only=True)
class _Run:
    """The state of one matrix run: its work directory and the report as it grows (``report``)."""

    work: Path
    # What the report says from the start (model, data, tolerance, run block); ``report`` adds what the run learns.
    head: Report
    given: JobInputs
    expected_outputs: Mapping[str, crosscheck.Array] | None = None
    # The report's warnings as they arrive (make_artifacts appends to it too), the data's first.
    warnings: list[str] = field(default_factory=list)
    # Why the run stopped before every target finished (Ctrl-C, SIGTERM, a lost engine); None while it goes on.
    incomplete: str | None = None
    # Each target's result as it stands, replaced as the run learns more (the job's result.json, how it ended).
    targets: dict[str, TargetResult] = field(default_factory=dict)
    # Each target's fp32 outputs, read once from the report folder, for the cross-target check.
    fp32_outputs: dict[str, Mapping[str, crosscheck.Array]] = field(default_factory=dict)
    # The exit code each failed target calls for (docs/contracts.md section 4).
    failure_codes: dict[str, int] = field(default_factory=dict)
    # The model's nodes as kernels see them, read once when a load failure needs explaining.
    nodes: list[NodeUse] | None = None
    # Each target's folder of int8 artifacts in the input directory (one per toolchain).
    artifacts: dict[str, str] = field(default_factory=dict)
    # What --resume may reuse: the report that was in out_dir when this run started.
    earlier: Earlier = field(default_factory=Earlier)
    # Notes for the user that are not findings about the model (what --resume reused).
    notes: list[str] = field(default_factory=list)

    @property
    def report(self) -> Report:
        """The report so far, targets in the order selected. Each warning once: prepare, the rewrite and the data
        may report the same finding."""
        return replace(
            self.head,
            incomplete=self.incomplete,
            warnings=tuple(dict.fromkeys(self.warnings)),
            targets=tuple(replace(e, warnings=tuple(dict.fromkeys(e.warnings))) for e in self.targets.values()),
        )


@dataclass(frozen=True, kw_only=True)
class MatrixResult:
    report: Report
    exit_code: int
    # What the user should know about the run itself (e.g. what --resume reused), for stderr.
    notes: tuple[str, ...] = ()


def run_matrix(fleet: Fleet, given: JobInputs, options: MatrixOptions, reporter: Reporter) -> MatrixResult:
    selected = fleet.config.select(options.targets)
    work = new_run_folder(fleet.config.cache_dir)
    inputs = work / INPUT_DIR
    head = _report_head(given, options, fleet)
    run = _Run(
        work=work, head=head, given=given, expected_outputs=given.data.expected_outputs, warnings=list(head.warnings)
    )
    if options.resume:
        run.earlier = read_earlier(options.out_dir / REPORT_FILE)
        if run.earlier.note:
            run.notes.append(run.earlier.note)
    try:
        run.warnings.extend(stage_inputs(inputs, given, fleet))
        runnable = []
        for target in selected:
            placement = fleet.placements[target.name]
            run.targets[target.name] = _target_head(target, placement, fleet)
            if not placement.runnable:
                _finish(run, target.name, status="skipped", reason=placement.reason)
            elif target.waits_for_request(options.targets):
                _finish(
                    run,
                    target.name,
                    status="skipped",
                    reason=f"runs only on request, its image being large: farm matrix --target {target.name}",
                )
            else:
                runnable.append(target)
        if given.tuned is not None:
            run.warnings.extend(given.tuned.warnings([t.name for t in runnable]))
        run.warnings.extend(pick_warnings(runnable, given.info, options.settings))
        _write(run, options)
        tags = _build(fleet, runnable, run, reporter)
        ready = [t for t in runnable if t.name in tags]
        keys = {t.name: _resume_key(fleet, t, tags[t.name], run, options) for t in ready}
        reused = {t.name for t in ready if _reuse(run, t.name, keys[t.name], options.out_dir, reporter)}
        if reused:  # their toolchains' prepare may not run this time; its findings came with the earlier report
            run.warnings.extend(run.earlier.warnings)
        prepared = make_artifacts(
            fleet,
            [t for t in ready if t.name not in reused],
            tags,
            work=work,
            given=given,
            settings=options.settings,
            cache=options.cache,
            reporter=reporter,
            warnings=run.warnings,
        )
        run.artifacts, run.head = prepared.folders, prepared.recorded(run.head)
        # Native targets first: their timings are the ones that count, so they run before QEMU loads the CPU,
        # and the first of them is the reference the other targets' fp32 outputs are compared with.
        ordered = sorted(ready, key=lambda t: fleet.placements[t.name].mode != "native")
        for target in ordered:
            if target.name not in reused:
                _evaluate(fleet, target, tags[target.name], inputs, run, options, reporter, key=keys[target.name])
                _write(run, options)
        _compare_targets(fleet, run, ordered, tags, options, reporter)
    except BaseException as exc:
        # Ctrl-C, SIGTERM or a lost engine: report.json keeps every result that arrived and says it is partial.
        run.incomplete = _why_stopped(exc, fleet.engine.host)
        raise
    finally:
        # Also on Ctrl-C or a lost engine: report.json then holds every result that arrived.
        _write(run, options)
        if not options.settings.keep_containers:
            shutil.rmtree(work, ignore_errors=True)
    if options.resume:
        ran = (t.name for t in ordered if t.name not in reused)
        run.notes.append(f"--resume reused {_names(reused)}; ran {_names(ran)}")
    return MatrixResult(report=run.report, exit_code=_exit_code(run.failure_codes.values()), notes=tuple(run.notes))


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "no target"


def _why_stopped(exc: BaseException, host: str) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM) before every target finished"
    if isinstance(exc, FarmError):
        return exc.message
    if isinstance(exc, ENGINE_ERRORS):
        return engine_lost("farm matrix", host, exc).message
    return f"farm failed ({type(exc).__name__}) before every target finished"


def _resume_key(fleet: Fleet, target: Target, tag: str, run: _Run, options: MatrixOptions) -> str:
    """What the target's result depends on (controller/resume.py): a later --resume reuses it while it is unchanged."""
    spec = json_object(
        job_spec(
            target,
            fleet.placements[target.name],
            "evaluate",
            candidates_for(target, run.given.info, options.settings),
            options.settings,
            inputs=run.work / INPUT_DIR,
            host_flags=fleet.hosts[target.name].cpu_flags,
            metric=run.given.metric,
        )
    )
    model = run.given.model
    tuned = None if run.given.tuned is None else run.given.tuned.models.get(target.name)
    # Which folder the int8 artifacts sit in depends on which other targets run; what is in them does not.
    spec.pop("artifacts")
    return resume_key(
        {
            "farm": farm.__version__,
            "model": run.given.info.sha256,
            "external_data": {name: file_sha256(model.parent / name) for name in run.given.info.external_data},
            # _report_head always writes the run block; None only in a farm.report/1 report read back.
            "data": None if run.head.run is None else run.head.run.data_sha256,
            "metric": None if run.given.metric is None else file_sha256(run.given.metric.path),
            "image": tag,
            "spec": spec,
            "limits": {"budget_s": options.settings.budget(target), "memory": target.memory},
            "tuned": None if tuned is None else list(tuned.sha256),
        }
    )


def _reuse(run: _Run, name: str, key: str, out_dir: Path, reporter: Reporter) -> bool:
    """Take the target's result from the earlier report when its key matches; say so on the progress display."""
    earlier = run.earlier.reusable(name, key)
    if earlier is None:
        return False
    entry = replace(earlier, resumed_from=earlier.resumed_from or run.earlier.created)
    run.targets[name] = entry
    if entry.status == "failed":
        run.failure_codes[name] = TargetFailed.exit_code
    kept = out_dir / "outputs" / f"{name}.fp32.npz"
    outputs = crosscheck.load_outputs(kept) if kept.is_file() else None
    if outputs is not None:
        run.fp32_outputs[name] = outputs
    with reporter.step(f"{name} (resumed)") as step:
        step.stage(f"{entry.status}, reused from the report of {entry.resumed_from}")
    return True


def _exit_code(failure_codes: Iterable[int]) -> int:
    """The contract's precedence: a host problem (3) over a failed build (4) over a failed target (5)."""
    codes = set(failure_codes)
    for code in (EnvironmentProblem.exit_code, BuildFailed.exit_code, TargetFailed.exit_code):
        if code in codes:
            return code
    return 0


def _report_head(given: JobInputs, options: MatrixOptions, fleet: Fleet) -> Report:
    """The report before any target ran: what the run is about, and the data's warnings."""
    return Report(
        farm_version=farm.__version__,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=given.info.model_summary(given.model),
        data=given.data.summary(),
        tolerance=Tolerance(
            cosine=options.settings.cosine,
            top1_agreement=options.settings.top1_agreement,
            outputs=tuple(options.settings.outputs) or None,
            metric=None if given.metric is None else given.metric.label,
        ),
        run=_run_block(given, options, fleet),
        warnings=given.data.warnings,
        targets=(),
    )


def _run_block(given: JobInputs, options: MatrixOptions, fleet: Fleet) -> RunInfo:
    """What farm gate needs to tell whether two runs' timings can be compared (docs/contracts.md section 2)."""
    return RunInfo(
        label=options.label,
        host=HostSummary(
            arch=fleet.host.arch,
            cpu_model=fleet.host.cpu_model,
            cpu_flags=tuple(sorted(fleet.host.cpu_flags)),
            cores=len(os.sched_getaffinity(0)),
            engine=f"Docker {fleet.engine_info.version}",
            kernel=os.uname().release,
        ),
        settings=RunSettings(
            threads=options.settings.threads,
            iterations=options.settings.native_iterations,
            timing_rounds=TIMING_ROUNDS,
            calibration=options.settings.calibration,
            optimization_level=options.settings.optimization_level,
            samples=given.data.samples,
            variants=options.settings.variants or None,
            timing_mode=options.settings.timing,
        ),
        data_sha256=given.data.sha256(),
    )


def _target_head(target: Target, placement: Placement, fleet: Fleet) -> TargetResult:
    reach = fleet.backends[target.name].reach if target.name in fleet.backends else None
    host = fleet.hosts.get(target.name)
    backend = (
        None
        if reach is None
        else TargetBackend(
            kind=reach.kind, where=reach.where, cpu_model=None if host is None else host.cpu_model, image=None
        )
    )
    return TargetResult(
        name=target.name,
        platform=target.platform,
        mode=placement.mode,
        cpu_model=placement.cpu_model,
        # What a partial report.json says of a target that farm never reached (it was interrupted or crashed).
        status="failed",
        reason="not run: farm stopped before it reached this target",
        backend=backend,
    )


def _finish(run: _Run, name: str, **fields: Any) -> None:
    run.targets[name] = replace(run.targets[name], **fields)


def _build(fleet: Fleet, targets: Sequence[Target], run: _Run, reporter: Reporter) -> dict[str, str]:
    tags: dict[str, str] = {}
    for name, outcome in ensure_images(fleet, targets, reporter).items():
        if outcome.image is not None:
            tags[name] = outcome.image.tag
            backend = run.targets[name].backend
            backend = None if backend is None else replace(backend, image=outcome.image.origin)
            _finish(run, name, image=outcome.image.tag, backend=backend)
        elif outcome.error is not None:
            if outcome.error.exit_code == 2:  # bad input (e.g. a runtime version that does not exist) stops the run
                raise outcome.error
            _finish(run, name, status="failed", reason=f"image build failed: {outcome.error}")
            run.failure_codes[name] = outcome.error.exit_code
    return tags


def _evaluate(
    fleet: Fleet,
    target: Target,
    tag: str,
    inputs: Path,
    run: _Run,
    options: MatrixOptions,
    reporter: Reporter,
    *,
    key: str,
) -> None:
    placement = fleet.placements[target.name]
    spec = job_spec(
        target,
        placement,
        "evaluate",
        candidates_for(target, run.given.info, options.settings),
        options.settings,
        inputs=inputs,
        host_flags=fleet.hosts[target.name].cpu_flags,
        metric=run.given.metric,
        artifacts=run.artifacts.get(target.name),
        tuned=None if run.given.tuned is None else run.given.tuned.spec(target.name),
    )
    out = job_out_dir(run.work, f"target-{target.name}")
    label = f"{target.name} ({placement.mode}{', ' + placement.cpu_model if placement.cpu_model else ''})"
    result: RunResult | None = None
    try:
        with reporter.step(label) as step:
            step.stage("evaluate")
            result = run_job(
                fleet,
                target,
                tag,
                spec,
                inputs,
                out,
                timeout_s=options.settings.budget(target),
                keep=options.settings.keep_containers,
                on_line=stage_lines(step),
            )
            if result.failure:
                step.stage(f"container {result.failure}")
    finally:
        # Also when Ctrl-C or a lost engine ends the run here: the variants the job wrote so far are kept.
        _collect(run, target.name, out, result, options.settings.budget(target))
    if options.settings.estimates and (why := no_estimate(target, placement)) is not None:
        _finish(run, target.name, warnings=(*run.targets[target.name].warnings, why))
    wanted_artifacts = bool(candidates_for(target, run.given.info, options.settings))
    if result is not None and not result.engine_error and (run.artifacts.get(target.name) or not wanted_artifacts):
        # Its job ended on its own (well or not), with the int8 artifacts it was meant to have, so running it again
        # would give the same: --resume may reuse it. Without them (prepare failed) it is a weaker result.
        _finish(run, target.name, resume_key=key)
    _explain_load_failure(fleet, target, run)
    _keep_fp32_outputs(run, target.name, out / "outputs" / "fp32.npz", options.out_dir)


def _explain_load_failure(fleet: Fleet, target: Target, run: _Run) -> None:
    """Say whether the runtime's refusal was what ``farm inspect`` predicts from the model and the runtime."""
    entry = run.targets[target.name]
    if entry.load_failure is None:
        return
    kind = entry.load_failure.kind
    found = compat.capabilities(fleet, target)
    if isinstance(found, str):
        predicted, prediction = None, f"unknown: {found}"
    else:
        if run.nodes is None:
            run.nodes = node_uses(run.given.model)
        info = run.given.info
        verdict = compat.predict(info.ir_version, info.opsets, run.nodes, found, target.providers)
        predicted = verdict.verdict == "fails" and verdict.failure_class == kind
        prediction = verdict.reason or "the model loads"
    said = "" if predicted is None else f"; farm inspect {'predicted this' if predicted else 'did not predict this'}"
    said += "" if predicted in (None, True) else f" ({prediction})"
    _finish(
        run,
        target.name,
        load_failure=LoadRefusal(kind=kind, predicted=predicted, prediction=prediction),
        reason=f"the runtime refused the model ({kind}): {entry.reason}{said}",
    )


def _collect(run: _Run, name: str, out: Path, result: RunResult | None, budget: float) -> None:
    """Merge what the job wrote with how its container ended; ``result`` is None when farm itself was stopped."""
    entry, written = run.targets[name], read_json(out / "result.json")
    if written:
        try:
            job = decode(TargetResult, written, where="result.json.")
        except ContractError as exc:
            job = replace(entry, status="failed", reason=f"the job wrote a result.json farm cannot read ({exc})")
        # The job's own findings; the rest (exit code, image, backend, ...) is the controller's.
        entry = replace(
            entry,
            status=job.status,
            reason=job.reason,
            runtime=job.runtime,
            variants=job.variants,
            recommended=job.recommended,
            recommendation_reason=job.recommendation_reason,
            # What its speed claims rest on, and the int8 variant to ship if int8 is needed (docs/contracts.md 2).
            speed_evidence=job.speed_evidence,
            int8_if_needed=job.int8_if_needed,
            estimate=job.estimate,
            warnings=job.warnings,
            cpu_seen=job.cpu_seen,
            load_failure=job.load_failure,
            export_check=job.export_check,
        )
    if result is None:
        entry = replace(
            entry, status="failed", reason="farm stopped while this target ran; its variants are those it finished"
        )
    else:
        entry = replace(entry, exit_code=result.exit_code, duration_s=round(result.duration_s, 2))
        if result.failure:
            # The partial variants the job wrote before it died stay in the report.
            reason = f"container {result.failure}"
            if result.out_of_memory:
                reason += " (raise memory for this target in targets.toml)"
            if result.timed_out:
                reason = (
                    f"exceeded its wall-clock budget of {budget:.0f} s and was stopped; the variants it "
                    "finished are kept (raise budget_s in targets.toml, or pass --timeout)"
                )
            entry = replace(entry, status="failed", reason=reason, log_tail=result.log_tail)
        elif not written:
            reason = "the job exited 0 but wrote no result.json"
            entry = replace(entry, status="failed", reason=reason, log_tail=result.log_tail)
    run.targets[name] = entry
    if entry.status == "failed":
        run.failure_codes[name] = TargetFailed.exit_code


def _keep_fp32_outputs(run: _Run, name: str, written: Path, out_dir: Path) -> None:
    """Copy the target's fp32 outputs into the report folder and check them against the data's expected outputs."""
    if not written.is_file():
        return
    kept = out_dir / "outputs" / f"{name}.fp32.npz"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written, kept)
    outputs = crosscheck.load_outputs(kept)
    if outputs is None:
        return
    run.fp32_outputs[name] = outputs
    if run.expected_outputs is None:
        return
    problem = crosscheck.disagreement(outputs, run.expected_outputs)
    if problem:
        warning = (
            f"fp32 disagrees with the expected outputs shipped with --data (rtol {crosscheck.RTOL:g}, "
            f"atol {crosscheck.ATOL:g}): {problem}"
        )
        _finish(run, name, warnings=(*run.targets[name].warnings, warning))


def _compare_targets(
    fleet: Fleet,
    run: _Run,
    ordered: Sequence[Target],
    tags: Mapping[str, str],
    options: MatrixOptions,
    reporter: Reporter,
) -> None:
    """Two targets whose fp32 outputs disagree is a finding: one of them runs the model wrongly. farm bisect's
    comparison of the two (unless --divergence none) says at which node they part."""
    present = [t for t in ordered if t.name in run.fp32_outputs]
    if len(present) < 2:
        return
    reference, *others = present
    outputs = run.fp32_outputs
    parted = {
        t.name: problem
        for t in others
        if (problem := crosscheck.disagreement(outputs[t.name], outputs[reference.name], atol=crosscheck.CROSS_ATOL))
    }
    found = (
        where_fp32_parts(
            fleet,
            work=run.work,
            tags=tags,
            samples=run.given.data.samples,
            reference=reference,
            others=[t for t in others if t.name in parted],
            settings=options.settings,
            reporter=reporter,
        )
        if parted and options.settings.divergence != 0
        else {}
    )
    for name, problem in parted.items():
        where = found.get(name)
        run.warnings.append(
            f"fp32 on {name} disagrees with fp32 on {reference.name}: {problem}"
            + ("" if where is None else f"; {parting(where, name, reference.name)}")
        )


def _write(run: _Run, options: MatrixOptions) -> None:
    """The report so far, in target order, written atomically so a crash or Ctrl-C leaves a readable file."""
    # The one serializer of report.json (report_json), the same that writes the finished report.
    write_text_atomic(options.out_dir / REPORT_FILE, render(run.report, "json"))


def write_reports(report: Report, out_dir: Path, *, json_file: Path | None, fmt: str) -> str:
    """Write every format into ``out_dir`` (and JSON to ``json_file``); return the one asked for on stdout."""
    try:
        # The types hold what Python can check; the schema also checks what they cannot (ranges, patterns).
        validate(encode(report))
    except InvalidReport as exc:
        # The report is farm's own making, so this is farm's bug, not the user's input; report.json is kept.
        raise FarmError(
            f"farm wrote a report that does not follow {SCHEMA_ID} ({exc.path}: {exc.problem})",
            fix=f"this is a bug in farm: report it with {out_dir / REPORT_FILE}",
        ) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, kind in (
        (REPORT_FILE, "json"),
        ("report.md", "markdown"),
        ("report.html", "html"),
        ("junit.xml", "junit"),
    ):
        write_text_atomic(out_dir / name, render(report, kind))
    if json_file is not None:
        try:
            write_text_atomic(json_file, render(report, "json"))
        except OSError as exc:
            raise BadInput(
                f"--json {json_file}: writing it failed because {exc.strerror or exc}",
                fix=f"pass a path in a writable folder (the report is also in {out_dir / REPORT_FILE})",
            ) from None
    return render(report, fmt)
