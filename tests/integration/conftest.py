from __future__ import annotations

import pytest

from farm.engine import Engine
from farm.fleet import BuildResults, Fleet, build_images
from tests.conftest import missing


@pytest.fixture(scope="session")
def fleet(engine: Engine) -> Fleet:
    return Fleet.open(None, engine=engine)


@pytest.fixture(scope="session")
def built(fleet: Fleet) -> BuildResults:
    """Every image this host can run, built once per session (cold on a fresh machine, cached after)."""
    for name in ("x86-avx2", "x86-avx512-vnni", "arm64"):
        placement = fleet.placements[name]
        if not placement.runnable:
            missing(f"target {name} cannot run here: {placement.reason}")
    return build_images(fleet, fleet.config.targets, explicit=False, quiet=True)


def image_of(built: BuildResults, name: str) -> str:
    return next(b.tag for b in built.built if b.target == name)
