from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from farm.backend.engine import RUN_LABEL, Engine
from farm.controller.fleet import BuildResults, Fleet, build_images
from farm.controller.progress import QuietReporter
from farm.errors import EnvironmentProblem
from farm.host import counting
from farm.host.owner import OWNER_LABEL, of_process
from tests.conftest import mine, missing

# Every host of this kind must run these: arm64 through binfmt QEMU (scripts/setup installs it) and the AVX2 tier,
# natively on an AVX2-only CPU or under qemu-x86_64 -cpu Haswell on one with AVX-512. x86-avx512-vnni needs VNNI
# hardware, which QEMU cannot emulate, so whether it runs depends on the CPU the machine was given.
REQUIRED_TARGETS = ("x86-avx2", "arm64")


@pytest.fixture(scope="session")
def fleet(engine: Engine) -> Fleet:
    return Fleet.open(None, engine=engine)


@pytest.fixture(scope="session")
def built(fleet: Fleet) -> BuildResults:
    """Every image this host can run, built once per session (cold on a fresh machine, cached after)."""
    for name in REQUIRED_TARGETS:
        placement = fleet.placements[name]
        if not placement.runnable:
            missing(f"target {name} cannot run here: {placement.reason}")
    return build_images(fleet, fleet.config.targets, explicit=False, reporter=QuietReporter())


@pytest.fixture(scope="session")
def counting_qemu(fleet: Fleet) -> counting.CountingQemu:
    if fleet.host.arch != "x86_64":
        pytest.skip(f"the counting QEMU bundle is built for x86_64 hosts; this one is {fleet.host.arch}")
    try:
        return counting.ensure(fleet.config.cache_dir)
    except EnvironmentProblem as exc:
        missing(f"the counting QEMU cannot be built here: {exc}")
        raise


def image_of(built: BuildResults, name: str) -> str:
    for image in built.built:
        if image.target == name:
            return image.tag
    pytest.skip(f"target {name} has no image on this host: " + dict(built.skipped).get(name, "not built"))


def runnable(fleet: Fleet, name: str) -> bool:
    return fleet.placements[name].runnable


def wait_for(engine: Engine, labels: list[str], process: subprocess.Popen[str], timeout: float = 600) -> str:
    """The id of the first running container of ``process`` that carries every label, while ``process`` still runs.

    Only ``process``'s own: on an engine that other farm runs share, theirs carry the same labels.
    """
    deadline = time.monotonic() + timeout
    own = [*labels, f"{OWNER_LABEL}={of_process(process.pid)}"]
    while time.monotonic() < deadline:
        for container in engine.client.containers.list(filters={"label": own, "status": "running"}):
            return str(container.id)
        if process.poll() is not None:
            pytest.fail(f"farm ended before a container labelled {labels} ran: {process.communicate()}")
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no container labelled {labels} ran within {timeout:.0f} s")


@contextlib.contextmanager
def watched_containers(engine: Engine, *, own: bool = False) -> Iterator[list[dict[str, str]]]:
    """The labels of every farm container created while the block runs, from the engine's event stream; ``own``:
    only those of farm processes this test process started (told by the owner label while the farm still runs), so
    that a test beside others sees none of theirs."""
    started: list[dict[str, str]] = []
    begun = time.time_ns()
    # The API's "since" has whole seconds; the events' own nanosecond times leave out the second before the block.
    events = engine.client.events(
        since=begun // 10**9, decode=True, filters={"type": "container", "event": "create", "label": RUN_LABEL}
    )

    def read() -> None:
        for event in events:
            labels = event["Actor"]["Attributes"]
            if int(event.get("timeNano", 0)) >= begun and (not own or mine(labels.get(OWNER_LABEL, ""))):
                started.append(labels)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield started
    finally:
        time.sleep(1)  # the last create event reaches the stream after the run that caused it has returned
        events.close()
        reader.join(timeout=5)
