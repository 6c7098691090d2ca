"""The controller runs with the versions constraints.txt pins: scripts/setup installs from it, and a fresh install
no longer floats to whatever PyPI has that day."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement

from tests.conftest import ROOT


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            found[name.lower().replace("_", "-")] = version
    return found


def test_every_dependency_of_farm_is_pinned_and_installed_at_its_pin() -> None:
    locked = pins()
    requirements = [Requirement(r) for r in metadata.requires("farm") or []]
    direct = {r.name.lower().replace("_", "-") for r in requirements}
    assert direct <= set(locked), f"not in constraints.txt: {sorted(direct - set(locked))}"
    wrong = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in locked and dist.version != locked[name]:
            wrong[name] = (dist.version, locked[name])
    assert not wrong, f"installed vs locked (run scripts/setup): {wrong}"
