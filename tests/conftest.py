"""Test harness: Docker and QEMU tests skip with their reason where the host lacks them, unless
FARM_REQUIRE_DOCKER=1 (set by CI), which turns every such skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farm.backend.engine import Engine
from farm.errors import FarmError

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
    root = tmp_path_factory.getbasetemp() / "artifact-cache"
    before = os.environ.get(ARTIFACT_CACHE_ENV)
    os.environ[ARTIFACT_CACHE_ENV] = str(root)
    yield root
    if before is None:
        os.environ.pop(ARTIFACT_CACHE_ENV, None)
    else:
        os.environ[ARTIFACT_CACHE_ENV] = before


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
    leftovers = [describe(connected, c) for c in (c.id for c in connected.farm_containers())]
    assert not leftovers, "containers left behind by the tests: " + "; ".join(leftovers)


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
    before = {c.id for c in engine.farm_containers()}
    return lambda: [describe(engine, c) for c in (i.id for i in engine.farm_containers()) if c not in before]
