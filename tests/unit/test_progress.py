"""The plain progress lines (--quiet, or no terminal) stay whole when several build threads report at once."""

from __future__ import annotations

import io

import pytest

from farm.controller.progress import QuietReporter


class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_every_write_is_one_whole_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # print() writes the text and the newline separately, so two threads could interleave between them.
    stderr = Writes()
    monkeypatch.setattr("sys.stderr", stderr)
    with QuietReporter() as reporter:
        with reporter.step("image arm64") as step:
            step.stage("wheels")
            step.line("not shown in quiet mode")
        reporter.note("a note")
    assert stderr.calls[0] == "image arm64: wheels\n"
    assert stderr.calls[1].startswith("image arm64: done in ")
    assert stderr.calls[2] == "a note\n"
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in stderr.calls), stderr.calls
