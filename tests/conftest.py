"""Test harness: Docker and QEMU tests skip with their reason where the host lacks them, unless
FARM_REQUIRE_DOCKER=1 (set by CI), which turns every such skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.engine import Engine
from farm.errors import FarmError

REQUIRE = os.environ.get("FARM_REQUIRE_DOCKER") == "1"
ROOT = Path(__file__).resolve().parent.parent


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
    leftovers = connected.run_containers()
    assert not leftovers, f"containers left behind by the tests: {leftovers}"
