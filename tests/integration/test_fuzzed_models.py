"""Issue 10, fuzzed models: every case of tests/fuzzmodels.py's corpus (truncated, random bytes, flipped bytes, wire
damage, wrong fields, cycles, huge dims, absurd external data, deep nesting, odd types) goes through `farm inspect`
and a one-target `farm matrix`. Each ends with one `error:` line and exit 2, or a valid report (exit 0 or 5); never
a traceback, never "a bug in farm", never a hang.

The commands run through tests/fuzzrunner.py, which imports farm once and forks a child per command line that calls
``farm.cli.main()``, the console script's entry point; a few cases also run through the console script itself to
show it behaves the same. The matrix runs the native CPU target with one int8 candidate, so that the models that
pass farm's checks on the host (and run in a container) stay cheap.

Counts per kind and outcome go to test-artifacts/fuzz-summary.json and, with -s, to the terminal.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from farm.backend.engine import Engine
from farm.controller.fleet import BuildResults, Fleet, build_images
from farm.controller.progress import QuietReporter
from farm.report.schema import validate
from farm.targets.config import Target
from tests.conftest import ROOT, let_timed_jobs_in, missing
from tests.fuzzmodels import Case, build_corpus

# Beside other tests (tests/conftest.py): each case must end cleanly; no figure of its runs is compared.
pytestmark = [pytest.mark.docker, pytest.mark.concurrent]

# One command on one model; a case still running then is a hang. A model that passes the host's checks runs two
# containers of a few seconds each.
CASE_TIMEOUT_S = 120.0
# What a fuzzed model may end with (docs/contracts.md section 4): 2 refused, 0 ran, 5 a target failed (inspect: one is
# predicted to fail). 3 or 4 would be the host's or a build's trouble, and 1 a bug in farm.
ALLOWED_EXITS = frozenset({0, 2, 5})
# Cases that also run through the real console script, one of each outcome and a slow path.
CONSOLE_CASES = (
    "seed-cnn",
    "truncated-matmul-00007",
    "external-parent-folder",
    "huge-input-1e12",
    "fields-input-elem-type-999",
)
SUMMARY = ROOT / "test-artifacts" / "fuzz-summary.json"
RUNNERS = max(1, min(2, os.cpu_count() or 1))
# Cases run between two chances for the other test process's waiting timed job (let_timed_jobs_in): the matrix's
# 291 cases took 184 s of runner time (Intel Xeon), so a chunk is a few seconds, where the whole run was 92.
CHUNK = 12


@dataclass(frozen=True, kw_only=True)
class Outcome:
    command: str
    case: Case
    rc: int | None
    signal: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    out: Path

    @property
    def label(self) -> str:
        if self.timed_out:
            return "hang"
        return f"exit {self.rc}" if self.signal is None else f"signal {self.signal}"


class Runner:
    """tests/fuzzrunner.py in a subprocess: one JSON line per command line, each answered when its child ended."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzzrunner"],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(self, command: str, case: Case, argv: list[str]) -> Outcome:
        out = self.work / command / case.name
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"argv": argv, "out": str(out), "timeout": CASE_TIMEOUT_S}) + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            pytest.fail(f"tests/fuzzrunner.py ended while running {command} on {case.name}")
        result = json.loads(answer)
        return Outcome(
            command=command,
            case=case,
            rc=result["rc"],
            signal=result["signal"],
            timed_out=result["timed_out"],
            seconds=result["seconds"],
            out=out,
            stdout=(out / "stdout").read_text(errors="replace"),
            stderr=(out / "stderr").read_text(errors="replace"),
        )

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._process.stdin is not None and self._process.stdout is not None
        return self._process.stdin, self._process.stdout

    def close(self) -> None:
        self._pipes()[0].close()
        self._process.wait(timeout=60)


def problems(outcome: Outcome) -> list[str]:
    """What is wrong with how a command ended on a fuzzed model; empty when it ended as the contract says."""
    found = []
    if outcome.timed_out:
        found.append(f"still running after {CASE_TIMEOUT_S:.0f} s (a hang)")
    elif outcome.signal is not None:
        found.append(f"killed by signal {outcome.signal}")
    elif outcome.rc not in ALLOWED_EXITS:
        found.append(f"exit {outcome.rc}, not one of {sorted(ALLOWED_EXITS)}")
    if "Traceback" in outcome.stdout + outcome.stderr:
        found.append("a traceback")
    if "this is a bug in farm" in outcome.stderr:
        found.append("'this is a bug in farm'")
    if outcome.rc == 2:
        found += _refusal_problems(outcome)
    elif outcome.rc in (0, 5):
        found += _report_problems(outcome)
    return found


def _refusal_problems(outcome: Outcome) -> list[str]:
    """Exit 2 is one `error:` line, the last thing farm printed, naming the model file. Progress lines may precede
    it: matrix prints them to stderr with -q."""
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return [f"exit 2 without exactly one final 'error:' line on stderr: {lines[-3:]}"]
    if outcome.case.path.name not in errors[0]:
        return [f"the error does not name the model file: {errors[0]}"]
    return []


def _report_problems(outcome: Outcome) -> list[str]:
    if outcome.command == "inspect":
        return [] if outcome.stdout.startswith("model ") else [f"no inspection on stdout: {outcome.stdout[:200]!r}"]
    report = outcome.out / "report" / "report.json"
    if not report.is_file():
        return [f"exit {outcome.rc} but no report.json"]
    try:
        validate(json.loads(report.read_text()))
    except Exception as exc:  # jsonschema's ValidationError, or JSON that does not parse: both are the finding
        return [f"report.json is not a valid report: {' '.join(str(exc).split())[:300]}"]
    return []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("fuzz") / "corpus")


@pytest.fixture(scope="module")
def native(fleet: Fleet, built: BuildResults) -> Target:
    """The CPU target this host runs natively (x86-avx512-vnni on a VNNI host, x86-avx2 on an AVX2-only one), or
    masked where none is (on a CPU with AMX every default x86 tier is masked)."""
    images = {b.target for b in built.built}
    for mode in ("native", "masked"):
        for target in fleet.config.targets:
            if fleet.placements[target.name].mode == mode and target.image == "cpu" and target.name in images:
                return target
    missing("no native or masked CPU target with an image on this host")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def targets_file(native: Target, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native target alone, with one int8 candidate and a short budget: the same image, a cheaper matrix."""
    path = tmp_path_factory.mktemp("targets") / "targets.toml"
    path.write_text(one_target_toml(native, candidates=("u8s8-dynamic",), budget_s=CASE_TIMEOUT_S - 30))
    cheap = Fleet.open(path, engine=engine)
    # The same content hash: nothing to build.
    build_images(cheap, cheap.config.targets, explicit=True, reporter=QuietReporter())
    return path


def one_target_toml(target: Target, *, candidates: tuple[str, ...], budget_s: float) -> str:
    """``target`` as a targets.toml table (JSON's strings and arrays are TOML's too)."""
    keys: dict[str, Any] = {
        "platform": target.platform,
        "image": target.image,
        "base": target.base,
        "runtime": target.runtime,
        "packages": list(target.packages),
        "providers": list(target.providers),
        "candidates": list(candidates),
        "cpu_features": list(target.cpu_features),
        "cpu_excludes": list(target.cpu_excludes),
        "gpus": target.gpus,
        "budget_s": budget_s,
    }
    if target.emulate_cpu is not None:
        keys["emulate_cpu"] = target.emulate_cpu
    return f"[targets.{target.name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Runner]]:
    """One runner per core: the cases are independent commands (farm's concurrent runs share its images and caches
    safely), and most of a case's time is one process's imports and its containers' start."""
    work = tmp_path_factory.mktemp("runs")
    started = [Runner(work) for _ in range(RUNNERS)]
    yield started
    for runner in started:
        runner.close()


@pytest.fixture(scope="module")
def runner(runners: list[Runner]) -> Runner:
    return runners[0]


def inspect_argv(case: Case, target: Target) -> list[str]:
    return ["inspect", str(case.path), "--target", target.name]


def matrix_argv(case: Case, target: Target, targets_file: Path, out: Path) -> list[str]:
    return [
        "matrix",
        str(case.path),
        "--targets",
        str(targets_file),
        "--target",
        target.name,
        "--iterations",
        "2",
        "--samples",
        "2",
        "--out",
        str(out),
        "-q",
    ]


@pytest.fixture(scope="module")
def summary() -> Iterator[dict[str, Any]]:
    """Filled by the tests of this module; written (and printed) once they ran."""
    found: dict[str, Any] = {}
    yield found
    if found:
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY.write_text(json.dumps(found, indent=2) + "\n")
        print(f"\nfuzzed models ({SUMMARY}):\n" + json.dumps(found, indent=2))


def run_all(
    runners: list[Runner], corpus: list[Case], command: str, argv: Callable[[Case, Path], list[str]]
) -> list[Outcome]:
    """Every case, each on whichever runner is free, a chunk at a time; the outcomes in the corpus's order."""
    free: queue.SimpleQueue[Runner] = queue.SimpleQueue()
    for runner in runners:
        free.put(runner)

    def one(case: Case) -> Outcome:
        runner = free.get()
        try:
            return runner.run(command, case, argv(case, runner.work / command / case.name / "report"))
        finally:
            free.put(runner)

    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        for start in range(0, len(corpus), CHUNK):
            outcomes += pool.map(one, corpus[start : start + CHUNK])
            let_timed_jobs_in()
    return outcomes


def record(summary: dict[str, Any], command: str, outcomes: list[Outcome]) -> None:
    by_kind: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.case.kind, Counter())[outcome.label] += 1
    summary[command] = {
        "cases": len(outcomes),
        "outcomes": dict(Counter(o.label for o in outcomes)),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "seconds": round(sum(o.seconds for o in outcomes), 1),
        "slowest": sorted(((o.case.name, o.seconds) for o in outcomes), key=lambda item: -item[1])[:5],
    }


def assert_clean(outcomes: list[Outcome]) -> None:
    failures = [
        f"{o.command} {o.case.name} ({o.case.detail}): {'; '.join(found)}" for o in outcomes if (found := problems(o))
    ]
    assert not failures, f"{len(failures)} of {len(outcomes)} fuzzed models ended badly:\n" + "\n".join(failures)


def test_every_fuzzed_model_through_farm_inspect(
    runners: list[Runner],
    corpus: list[Case],
    native: Target,
    summary: dict[str, Any],
    new_containers: Callable[[], list[str]],
) -> None:
    outcomes = run_all(runners, corpus, "inspect", lambda case, _: inspect_argv(case, native))
    record(summary, "inspect", outcomes)
    assert_clean(outcomes)
    # Every outcome occurs: refused, read, and predicted to fail from the runtime's own limits (an opset of 9999).
    assert {o.rc for o in outcomes} >= {0, 2, 5}
    assert not new_containers()


def test_every_fuzzed_model_through_a_one_target_matrix(
    runners: list[Runner],
    corpus: list[Case],
    native: Target,
    targets_file: Path,
    summary: dict[str, Any],
    new_containers: Callable[[], list[str]],
) -> None:
    outcomes = run_all(runners, corpus, "matrix", lambda case, out: matrix_argv(case, native, targets_file, out))
    record(summary, "matrix", outcomes)
    assert_clean(outcomes)
    assert {o.rc for o in outcomes} >= {0, 2, 5}
    assert not new_containers()


def test_the_console_script_ends_the_same_as_the_forked_runner(
    runner: Runner,
    corpus: list[Case],
    native: Target,
    targets_file: Path,
    tmp_path: Path,
) -> None:
    farm = Path(sys.executable).parent / "farm"
    chosen = [case for case in corpus if case.name in CONSOLE_CASES]
    assert len(chosen) == len(CONSOLE_CASES)
    for case, command in ((case, command) for case in chosen for command in ("inspect", "matrix")):

        def argv(out: Path, case: Case = case, command: str = command) -> list[str]:
            return inspect_argv(case, native) if command == "inspect" else matrix_argv(case, native, targets_file, out)

        forked = runner.run(f"console-{command}", case, argv(runner.work / f"console-{command}" / case.name / "report"))
        direct = subprocess.run(
            [str(farm), *argv(tmp_path / command / case.name / "report")],
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT_S,
            cwd=ROOT,
        )
        assert direct.returncode == forked.rc, (case.name, command, direct.stderr, forked.stderr)
        assert "Traceback" not in direct.stderr + direct.stdout
        errors = [line for line in direct.stderr.splitlines() if line.startswith("error:")]
        assert errors == [line for line in forked.stderr.splitlines() if line.startswith("error:")]
