"""`farm tune`: per target, the fastest mixed-precision model that holds accuracy, or the evidence that none does.

The search runs inside each target's container (farm/job/tune/), with that target's own runtime and kernels, since
saturation makes the answer differ by ISA. Native and masked targets go first and search with real timings; the
first of them ranks the quantization points, and emulated targets reuse that ranking and search on accuracy alone
(their timings would say nothing). Each target's search log is written as it goes, so an interrupted run keeps what
it found; ``--resume`` keeps each target whose search finished and searches the others again, with the ranking
their interrupted search had measured (the ranking is the costly, deterministic part; trials are re-run).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import farm
from farm.controller.fleet import Fleet, ensure_images
from farm.controller.jobs import (
    INPUT_DIR,
    JobInputs,
    JobSettings,
    job_out_dir,
    job_spec,
    last_line,
    new_run_folder,
    read_json,
    run_job,
    stage_inputs,
    stage_lines,
    toolchain,
)
from farm.controller.progress import Reporter
from farm.controller.resume import resume_key
from farm.controller.tuned import REPORT_FILE, REPORT_SCHEMA, TUNED_DIR
from farm.errors import BadInput, TargetFailed
from farm.job.codec import decode, encode, json_object, keyed
from farm.job.kernels import KernelFinding
from farm.job.modelfile import copy_model
from farm.job.result import write_json_atomic
from farm.job.spec import DEFAULT_FLOOR, TUNE_FILE, TUNED_MODEL, Tune
from farm.job.tunecontract import Best, Candidate, Difference, Point, Searched, Treated
from farm.job.variants import RECIPES
from farm.targets.config import Target

# Seconds a container gets beyond the search budget: loading, the fp32 reference, the naive variants, the ranking.
SETUP_ALLOWANCE_S = 900.0
_BUDGET_RE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|t|trials?)\s*$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    """--budget, as the report's ``budget`` and the spec's ``tune`` block name it."""

    seconds: float | None = keyed(key="budget_s", default=None)
    trials: int | None = keyed(key="budget_trials", default=None)

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """``--budget``: a time (90s, 10m, 1h) or a number of trials (40t, 40 trials); none: 20 trials."""
        if text is None:
            return cls(trials=20)
        found = _BUDGET_RE.match(text.lower())
        if found is None:
            raise BadInput(
                f"--budget {text!r} is neither a time nor a number of trials",
                fix="write a time as 90s, 10m or 1h, or trials as 40t",
            )
        number, unit = float(found["number"]), found["unit"]
        if unit.startswith("t"):
            if number < 1 or number != int(number):
                raise BadInput(f"--budget {text!r}: the number of trials must be a whole number of at least 1")
            return cls(trials=int(number))
        return cls(seconds=number * {"s": 1, "m": 60, "h": 3600}[unit])


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    settings: JobSettings = field(default_factory=JobSettings)
    targets: Sequence[str] = ()
    budget: Budget = field(default_factory=Budget)
    floor: float = DEFAULT_FLOOR
    out_dir: Path = Path("farm-tune")
    resume: bool = False


@dataclass(frozen=True, kw_only=True)
class TuneResult:
    report: dict[str, Any]
    exit_code: int


def run_tune(fleet: Fleet, given: JobInputs, options: TuneOptions, reporter: Reporter) -> TuneResult:
    selected = fleet.config.select(options.targets)
    work = new_run_folder(fleet.config.cache_dir, "tune")
    inputs = work / INPUT_DIR
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": encode(given.info.model_summary(given.model)),
        "floor": options.floor,
        "budget": json_object(options.budget),
        "warnings": [],
        "targets": [],
    }
    earlier = _earlier(options) if options.resume else {}
    failed = False
    try:
        report["warnings"] += stage_inputs(inputs, given, fleet)
        runnable = []
        for target in selected:
            placement = fleet.placements[target.name]
            if not placement.runnable or target.waits_for_request(options.targets):
                report["targets"].append(
                    {
                        "name": target.name,
                        "mode": placement.mode,
                        "status": "skipped",
                        "reason": placement.reason or "runs only on request",
                    }
                )
            else:
                runnable.append(target)
        outcomes = ensure_images(fleet, runnable, reporter)
        # Per toolchain (runtime and packages: its pre-processing names the nodes), the first native or masked
        # search's ranking and tuned model, for the emulated targets of that toolchain.
        rankings: dict[str, tuple[Point, ...]] = {}
        candidates: dict[str, Candidate] = {}
        for target in sorted(runnable, key=lambda t: fleet.placements[t.name].mode == "emulated"):
            outcome = outcomes[target.name]
            if outcome.image is None:
                report["targets"].append(
                    {
                        "name": target.name,
                        "mode": fleet.placements[target.name].mode,
                        "status": "failed",
                        "reason": f"image build failed: {outcome.error}",
                    }
                )
                failed = True
                continue
            emulated = fleet.placements[target.name].mode == "emulated"
            chain = toolchain(target)
            # What the native searches gave is part of what an emulated search depends on.
            ranking, candidate = (rankings.get(chain), candidates.get(chain)) if emulated else (None, None)
            handed = {"ranking": encode(ranking), "candidate": encode(candidate)} if emulated else {}
            key = _key(target, outcome.image.tag, given, options, handed)
            done = earlier.get(target.name)
            if done is not None and done.get("resume_key") != key:
                done = None  # the model, data, image or settings changed since: nothing of it applies
            if done is not None and done.get("status") == "ok":
                entry = {**done, "resumed": True}  # finished before: kept as it was, tuned model included
            else:
                # An emulated search cannot afford to rank: it takes the native search's ranking and starts from
                # its tuned model. A resumed native one has its own ranking already.
                given_ranking = ranking or (None if done is None else _searched(done).ranking or None)
                entry = _tune_target(
                    fleet,
                    target,
                    outcome.image.tag,
                    inputs,
                    work,
                    given,
                    options,
                    reporter,
                    ranking=given_ranking,
                    candidate=candidate,
                    key=key,
                    report=report,
                )
            report["targets"].append(entry)
            failed = failed or entry["status"] == "failed"
            searched = _searched(entry)
            if not emulated and searched.ranking:
                rankings.setdefault(chain, searched.ranking)
            if not emulated and (found := tuned_candidate(entry)) is not None:
                candidates.setdefault(chain, found)
            write_json_atomic(options.out_dir / REPORT_FILE, report)
    finally:
        report["differences"] = [encode(d) for d in differences(report["targets"])]
        write_json_atomic(options.out_dir / REPORT_FILE, report)
        shutil.rmtree(work, ignore_errors=True)
    return TuneResult(report=report, exit_code=TargetFailed.exit_code if failed else 0)


def differences(entries: list[dict[str, Any]]) -> list[Difference]:
    """Each node that the tuned models treat differently across targets (fp32 on one, 7-bit weights or int8 on
    another), with each target's reason as its search measured it: the change's own reason where the node is kept
    out of int8, and where it is not, the target's kernel check of that node (or why it was returned to int8)."""
    tuned = [(searched, best) for searched in map(_searched, entries) if (best := searched.tuned) is not None]
    where = {searched.name: _treatment(searched, best) for searched, best in tuned}
    nodes = sorted({node for treated in where.values() for node in treated})
    found = []
    for node in nodes:
        per_target = {
            searched.name: where[searched.name].get(node)
            or Treated(treatment="int8", why=_int8_why(searched, best, node))
            for searched, best in tuned
        }
        if len({treated.treatment for treated in per_target.values()}) >= 2:
            found.append(Difference(node=node, targets=per_target))
    return found


def _searched(entry: Mapping[str, Any]) -> Searched:
    """What the controller reads of a target's entry (the job's tune.json with the controller's keys)."""
    return decode(Searched, entry, where=f"targets[{entry.get('name')}].")


def _treatment(searched: Searched, best: Best) -> dict[str, Treated]:
    """What a target's tuned model keeps out of plain int8, by node: fp32 or 7-bit weights, and why."""
    treated: dict[str, Treated] = {}
    for change in best.changes:
        for node in change.nodes:
            treated[node] = Treated(treatment="fp32", why=change.why)
        weights = set(change.seven_bit)
        if weights:
            # Each weight's node as the kernel check named it (one change may give several nodes 7-bit weights).
            nodes = [k.node for k in searched.kernels if k.weight in weights and k.variant == best.variant]
            for node in nodes or [change.kernel_node or change.seven_bit[0]]:
                treated.setdefault(node, Treated(treatment="7-bit weights", why=change.why))
    return treated


def _int8_why(searched: Searched, best: Best, node: str) -> str:
    returned = next((r for r in searched.returned if node in r.returned), None)
    if returned is not None and returned.why:
        return returned.why
    kernel = next((k for k in searched.kernels if k.node == node and k.variant == best.variant), None)
    if kernel is None:
        return "in int8 there; its kernel check did not measure this node"
    return KernelFinding.of(kernel).describe()


def _tune_target(
    fleet: Fleet,
    target: Target,
    tag: str,
    inputs: Path,
    work: Path,
    given: JobInputs,
    options: TuneOptions,
    reporter: Reporter,
    *,
    ranking: tuple[Point, ...] | None,
    candidate: Candidate | None,
    key: str,
    report: dict[str, Any],
) -> dict[str, Any]:
    placement = fleet.placements[target.name]
    spec = job_spec(
        target,
        placement,
        "tune",
        _static(target),
        options.settings,
        inputs=inputs,
        host_flags=fleet.hosts[target.name].cpu_flags,
        metric=given.metric,
        tune=Tune(
            budget_s=options.budget.seconds,
            budget_trials=options.budget.trials,
            floor=options.floor,
            ranking=None if ranking is None else tuple(ranking),
            start=None,
            candidate=candidate,
        ),
    )
    out = job_out_dir(work, f"tune-{target.name}")
    timeout = (options.budget.seconds or target.budget_s) + SETUP_ALLOWANCE_S
    try:
        with reporter.step(f"tune {target.name} ({placement.mode})") as step:
            step.stage("search")
            result = run_job(
                fleet, target, tag, spec, inputs, out, timeout_s=timeout, keep=False, on_line=stage_lines(step)
            )
    except BaseException:
        # Ctrl-C: the search so far (its ranking above all) goes into the report before the run folder goes.
        report["targets"].append(
            {
                **read_json(out / TUNE_FILE),
                "name": target.name,
                "mode": placement.mode,
                "resume_key": key,
                "status": "failed",
                "reason": "interrupted",
            }
        )
        raise
    entry = read_json(out / TUNE_FILE)
    searched = entry.get("status") == "done" and entry.get("verdict")
    entry.update({"name": target.name, "mode": placement.mode, "resume_key": key})
    if result.failure or not searched:
        # What the search found before it stopped stays in the entry (its ranking serves --resume).
        why = entry.get("error") or (f"its container {result.failure}" if result.failure else "it wrote no verdict")
        entry.update({"status": "failed", "reason": f"the search did not finish: {why} ({last_line(result.log_tail)})"})
        return entry
    entry["status"] = "ok"
    if (out / TUNED_MODEL).is_file():
        kept = options.out_dir / TUNED_DIR / f"{target.name}.onnx"
        kept.parent.mkdir(parents=True, exist_ok=True)
        # Under the target's name, its data file renamed with it, so the copy is whole wherever the folder goes.
        copy_model(out / TUNED_MODEL, kept)
        entry["model_file"] = str(kept.resolve())
    return entry


def tuned_candidate(entry: dict[str, Any]) -> Candidate | None:
    """A target's tuned model as the spec's ``tune.candidate`` names it, for the emulated targets to check first; None
    when its search found none."""
    searched = _searched(entry)
    best = searched.tuned
    return None if best is None else best.candidate(searched.name)


def _key(target: Target, tag: str, given: JobInputs, options: TuneOptions, handed: dict[str, Any]) -> str:
    """What a target's search depends on: --resume keeps an earlier search only while this is unchanged."""
    return resume_key(
        {
            "farm": farm.__version__,
            "model": given.info.sha256,
            "data": given.data.sha256(),
            "image": tag,
            "target": target.name,
            "floor": options.floor,
            "budget": json_object(options.budget),
            "tolerance": [options.settings.cosine, options.settings.top1_agreement],
            "timing": [options.settings.threads, options.settings.native_iterations],
            "handed": handed,
        }
    )


def _static(target: Target) -> list[str]:
    """The target's static (QDQ) candidates: exclusions are a QDQ notion."""
    return [name for name in target.candidates if RECIPES[name].kind == "static"]


def _earlier(options: TuneOptions) -> dict[str, dict[str, Any]]:
    found = read_json(options.out_dir / REPORT_FILE)
    if found.get("schema") != REPORT_SCHEMA:
        return {}
    return {str(t["name"]): t for t in found.get("targets", []) if t.get("resume_key")}


def render(report: dict[str, Any]) -> str:
    """One line per target: its verdict, what stays fp32 and why, accuracy and speed against fp32."""
    lines = [f"farm tune: {report['model']['path']} (floor {report['floor']:g}x over fp32)"]
    for entry in report["targets"]:
        lines.append(_line(entry))
    for difference in report.get("differences") or []:
        treated = "; ".join(
            f"{how['as']} on {name}" + (f" ({how['why']})" if how.get("why") else "")
            for name, how in difference["targets"].items()
        )
        lines.append(f"differs: {difference['node']}: {treated}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _line(entry: dict[str, Any]) -> str:
    head = f"{entry['name']} ({entry.get('mode', '?')})"
    if entry.get("status") != "ok":
        return f"{head}: {entry.get('status')}: {entry.get('reason')}"
    best = entry.get("best") or {}
    accuracy = best.get("accuracy") or {}
    speed = best.get("speedup")
    trials = len(entry.get("trials") or [])
    kept = best.get("exclude") or []
    seven = best.get("seven_bit") or []
    untimed = "not timed (emulated)" if entry.get("mode") == "emulated" else "not timed"
    figures = (
        "no int8 model to compare"
        if "cosine" not in accuracy
        else f"cosine {accuracy['cosine']:.4f}, "
        + (f"{speed:.2f}x fp32" if isinstance(speed, int | float) else untimed)
    )
    what = (
        "keep fp32"
        if entry["verdict"] == "keep-fp32"
        else f"{best.get('variant')} with {len(kept)} node(s) in fp32"
        + (f": {', '.join(kept[:6])}" if kept else "")
        + (f", 7-bit weights for {', '.join(seven[:6])}" if seven else "")
    )
    return f"{head}: {what} ({figures}; {trials} trial(s)); {entry.get('reason', '')}".rstrip("; ")
