"""Test harness: Docker and QEMU tests skip with their reason where the host lacks them, unless
FARM_REQUIRE_DOCKER=1 (set by CI), which turns every such skip into a failure.

scripts/test runs the tests in two processes (pytest-xdist). A test runs beside another only where neither can
disturb the other: unit tests, and integration modules marked ``concurrent``. Every other test runs alone, because
what it asserts rests on timings (a recommendation, a gate, a "faster") or on what the whole engine holds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.backend.cleanup import ContainerInfo
from farm.backend.engine import Engine
from farm.errors import FarmError
from farm.host import turns
from farm.host.owner import is_gone, owner_pid, parent_of
from farm.host.turns import OFF, TURNS_ENV

REQUIRE = os.environ.get("FARM_REQUIRE_DOCKER") == "1"
ROOT = Path(__file__).resolve().parent.parent
# The counting QEMU makes every emulated run 30-75% slower; the tests of estimates (tests/integration/
# test_estimates.py) turn it on for their own matrices, the others check accuracy and recommendations without it.
os.environ.setdefault("FARM_ESTIMATES", "0")
ARTIFACT_CACHE_ENV = "FARM_ARTIFACT_CACHE_DIR"


@pytest.fixture(scope="session", autouse=True)
def session_artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One artifact cache for the whole session, in its temporary folder (never the user's ~/.cache): tests that
    run a matrix of the same model, data and settings share its int8 artifacts, and a test about the prepare stage
    itself gives its farm another (empty) folder or --no-cache. Every farm the tests start inherits it."""
    root = shared_temp(tmp_path_factory) / "artifact-cache"
    before = os.environ.get(ARTIFACT_CACHE_ENV)
    os.environ[ARTIFACT_CACHE_ENV] = str(root)
    yield root
    if before is None:
        os.environ.pop(ARTIFACT_CACHE_ENV, None)
    else:
        os.environ[ARTIFACT_CACHE_ENV] = before


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary folder that every test process shares: the parent of each xdist worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# The host's turns (farm.host.turns), in a folder that the controlling pytest makes for its workers and names in
# FARM_HOST_TURNS, so that every farm a test starts takes its turns there too. A test runs in one of three ways:
# - concurrent: in a shared turn, beside other shared turns; the farms it starts take none (FARM_HOST_TURNS=off);
# - farm_turns: in a shared turn, given up while a farm command of its runs (outside_turn), and that farm takes its
#   own turns, alone for each job that times (the timing of the test's other work would be disturbed by nothing);
# - alone (every other test): in a turn of its own, and the farms it starts take none.
CONCURRENT = "concurrent"
FARM_TURNS = "farm_turns"
ALONE = "alone"
UNIT = ROOT / "tests" / "unit"
TURNS_KEPT = ROOT / "test-artifacts" / "turns.jsonl"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{CONCURRENT}: may run beside other tests: it asserts nothing that timings change, and nothing about "
        "containers, images or events on the engine that are not its own (tests/unit is concurrent by location)",
    )
    config.addinivalue_line(
        "markers",
        f"{FARM_TURNS}: runs beside other tests except while a job of its farm commands times a target: those farms "
        "take this host to themselves for each timed job (farm.host.turns); its farm commands run through "
        "tests.farmcli.farm or tests.integration.farmrun.farm_matrix (outside_turn)",
    )
    config.addinivalue_line("markers", f"{ALONE}: runs alone, whatever its module's marks say")
    if not hasattr(config, "workerinput") and os.environ.get(TURNS_ENV, OFF) == OFF:
        place = tempfile.mkdtemp(prefix="farm-test-turns-")  # the workers start after this, and inherit it
        (Path(place) / turns.LOG).touch()
        os.environ[TURNS_ENV] = place


def pytest_unconfigure(config: pytest.Config) -> None:
    place = os.environ.get(TURNS_ENV, "")
    if not hasattr(config, "workerinput") and Path(place).name.startswith("farm-test-turns-"):
        shutil.rmtree(os.environ.pop(TURNS_ENV), ignore_errors=True)


def kind(item: pytest.Item) -> str:
    if item.get_closest_marker(ALONE) is not None:
        return ALONE
    if item.get_closest_marker(CONCURRENT) is not None or item.path.is_relative_to(UNIT):
        return CONCURRENT
    return FARM_TURNS if item.get_closest_marker(FARM_TURNS) is not None else ALONE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that run alone first, then those whose farms take turns, then the concurrent integration modules
    (the longest work), then the unit tests, many and short, which fill the end evenly. Alone tests last would leave
    the other process blocked behind each of them while a long concurrent module still ran. xdist hands modules
    out in this order."""
    order = {ALONE: 0, FARM_TURNS: 1, CONCURRENT: 2}
    items.sort(key=lambda item: order[kind(item)] + (1 if item.path.is_relative_to(UNIT) else 0))


class _Turn:
    """The running test's shared turn, which outside_turn gives up around a farm command, and let_timed_jobs_in
    for a timed job that waits, and takes again."""

    def __init__(self, nodeid: str, place: Path, *, farms_take_turns: bool) -> None:
        self.nodeid, self.place, self.farms_take_turns = nodeid, place, farms_take_turns
        self.held = contextlib.ExitStack()

    def take(self) -> None:
        self.held.enter_context(turns.turn(self.nodeid, alone=False, place=self.place))

    def drop(self) -> None:
        self.held.close()


_holding: _Turn | None = None


@contextlib.contextmanager
def outside_turn() -> Iterator[None]:
    """Around a farm command of a test marked farm_turns: the test gives up its turn and the farm takes its own, in
    the same folder. Elsewhere the farm runs inside the test's turn and takes none (FARM_HOST_TURNS=off); a concurrent
    test lets a waiting timed job in first (let_timed_jobs_in), since nothing of its own runs between two commands."""
    turn = _holding
    if turn is None or not turn.farms_take_turns:
        let_timed_jobs_in()
        yield
        return
    turn.drop()
    os.environ[TURNS_ENV] = str(turn.place)
    try:
        yield
    finally:
        os.environ[TURNS_ENV] = OFF
        turn.take()


def let_timed_jobs_in() -> None:
    """Where a long test that shares the host has no work running (between its cases or runs): if a timed job of the
    other process's farm waits for the host, give up this test's turn and take it again behind that job. A test
    holds one turn from its start to its end, so without this the timed job, and the process that runs it, would
    idle until the whole test ended (up to a minute and a half, the fuzzed models' matrix)."""
    turn = _holding
    if turn is not None and turns.asked_for(turn.place):
        turn.drop()
        turn.take()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Each test, its fixtures' setup and teardown included (a module's matrix runs in its first test's setup),
    holds its turn. Without xdist nothing runs beside it, and the farms it starts take their turns as anywhere."""
    global _holding
    place = turns.folder() if hasattr(item.config, "workerinput") else None
    if place is None:
        return (yield)
    how = kind(item)
    with contextlib.ExitStack() as held:
        if how == ALONE:
            held.enter_context(turns.turn(item.nodeid, alone=True, place=place))
        else:
            _holding = _Turn(item.nodeid, place, farms_take_turns=how == FARM_TURNS)
            _holding.take()
            held.callback(_holding.drop)
        os.environ[TURNS_ENV] = OFF
        try:
            return (yield)
        finally:
            os.environ[TURNS_ENV] = str(place)
            _holding = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller fails the run if a turn taken alone (a test's, or a timed job's of a farm that a farm_turns test
    started) overlapped any other (CLOCK_MONOTONIC is the machine's, the same in every process): the turns are
    checked on every run, not trusted."""
    log = Path(os.environ.get(TURNS_ENV, OFF)) / turns.LOG
    if hasattr(session.config, "workerinput") or not log.exists():
        return
    taken = [json.loads(line) for line in log.read_text().splitlines()]
    if not taken:  # one process (-n 0, -p no:xdist), and no farm that timed
        return
    reporter = session.config.pluginmanager.getplugin("terminalreporter")
    assert reporter is not None
    reporter.ensure_newline()
    reporter.write_line(timeline(taken))
    # Kept for the next change to the order or the turns: which test held the host when, and alone or not.
    TURNS_KEPT.parent.mkdir(parents=True, exist_ok=True)
    TURNS_KEPT.write_text(log.read_text())
    clashes = [
        f"{a[3].split('[')[0]} ran beside {b[3].split('[')[0]}"
        for i, a in enumerate(taken)
        for b in taken[i + 1 :]
        if not (a[2] and b[2]) and a[0] < b[1] and b[0] < a[1]
    ]
    if clashes:
        reporter.write_line("tests that must run alone did not: " + "; ".join(clashes[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def timeline(taken: list[list[Any]]) -> str:
    """Where the session's time went: what the two processes overlapped, what ran alone, and the time no test ran
    (startup, collection, and a process waiting for the other): the figures to watch when the suite grows."""
    alone = [end - start for start, end, shared, _ in taken if not shared]
    edges = sorted(edge for start, end, _, _ in taken for edge in ((start, 1), (end, -1)))
    running, last, covered, both = 0, edges[0][0], 0.0, 0.0
    for when, step in edges:
        covered += (when - last) if running else 0.0
        both += (when - last) if running > 1 else 0.0
        running, last = running + step, when
    span = edges[-1][0] - edges[0][0]
    return (
        f"turns of tests and timed farm jobs: {len(taken) - len(alone)} shared, {len(alone)} alone "
        f"({sum(alone):.0f} s); "
        f"{span:.0f} s from the first to the last, {both:.0f} s of it with two tests at once, "
        f"{span - covered:.0f} s with none"
    )


def missing(reason: str) -> None:
    """Skip, or fail where CI requires the real engine."""
    if REQUIRE:
        pytest.fail(f"FARM_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        connected = Engine.connect()
    except FarmError as exc:
        missing(str(exc))
    yield connected
    leftovers = [describe(connected, c.id) for c in own_containers(connected)]
    assert not leftovers, "containers left behind by the tests: " + "; ".join(leftovers)


def own_containers(engine: Engine) -> list[ContainerInfo]:
    """The farm containers this test process is answerable for: started by it or by a process it started, or left
    by a process that is gone. The other test process's (scripts/test runs two) are alive, and not this one's."""
    return [c for c in engine.farm_containers() if c.owner is None or is_gone(c.owner) is not False or mine(c.owner)]


def mine(owner: str) -> bool:
    """Whether the live process the owner label names is this one or descends from it."""
    pid = owner_pid(owner)
    while pid is not None and pid > 1:
        if pid == os.getpid():
            return True
        pid = parent_of(pid)
    return False


def describe(engine: Engine, container: str) -> str:
    """Enough of a container to tell which code made it: image, command, labels, state, created."""
    try:
        info = engine.client.api.inspect_container(container)
    except Exception as exc:  # gone meanwhile, or the engine is: the id is all there is
        return f"{container[:12]} ({type(exc).__name__})"
    state = info.get("State", {})
    return (
        f"{container[:12]} image={info['Config'].get('Image')} cmd={info['Config'].get('Cmd')} "
        f"labels={info['Config'].get('Labels')} status={state.get('Status')} error={state.get('Error')!r} "
        f"created={info.get('Created')}"
    )


@pytest.fixture
def new_containers(engine: Engine) -> Callable[[], list[str]]:
    """The farm containers that exist now and did not when the test began: a test checks its own leaks, so one
    leak elsewhere fails once (at the session's end, described) rather than in every later test."""
    before = {c.id for c in own_containers(engine)}
    return lambda: [describe(engine, c.id) for c in own_containers(engine) if c.id not in before]
