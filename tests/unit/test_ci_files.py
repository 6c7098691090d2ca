"""The files users copy: the GitHub workflow parses and calls farm only with commands and options farm has; the
example gate policy loads. And the developers' pre-commit hooks run this checkout's own tools."""

from __future__ import annotations

import os
import re

import yaml

from farm.gate import Policy
from tests.conftest import ROOT
from tests.farmcli import farm

WORKFLOW = ROOT / "examples" / "github-workflow-farm-gate.yml"


def test_the_workflow_parses_and_uses_only_what_farm_has() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    calls = re.findall(r"\bfarm\)?\"? (\w+)([^\n]*)", scripts)
    commands = {command for command, _ in calls}
    assert {"matrix", "gate", "doctor"} <= commands, commands
    for command, rest in calls:
        helped = farm(command, "--help")
        assert helped.returncode == 0, helped.stderr
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert option in helped.stdout, f"farm {command} has no {option}"
    # What the gate step uses to compare: the baseline and the policy, when present.
    assert "--baseline baseline" in scripts and "--policy gate.toml" in scripts


def test_the_example_policy_loads() -> None:
    policy = Policy.load(ROOT / "examples" / "gate.toml")
    assert policy.required_targets == ("x86-avx2", "arm64")
    assert policy.limits_for("arm64").max_cosine_drop == 0.02
    assert policy.limits_for("x86-avx2").max_cosine_drop == 0.01


def test_the_pre_commit_hooks_are_local_and_run_the_checkout_s_own_tools() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]  # nothing to clone or download
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert set(hooks) == {"ruff", "ruff-format", "mypy", "shellcheck"}
    for hook in hooks.values():
        tool = ROOT / hook["entry"].split()[0]
        assert tool.parent == ROOT / ".venv" / "bin" and os.access(tool, os.X_OK), hook
