"""The matrix's pure decisions: exit-code precedence (docs/contracts.md section 4)."""

from __future__ import annotations

from farm.controller.matrix import _exit_code


def test_exit_code_prefers_host_problems_then_builds_then_targets() -> None:
    assert _exit_code([]) == 0
    assert _exit_code([5]) == 5
    assert _exit_code([5, 4]) == 4
    assert _exit_code([5, 4, 3]) == 3
