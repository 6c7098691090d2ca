"""A counting QEMU bundle as farm.host.counting describes one, for unit tests that only need its paths, and its
plugin as the job's marks see it (fake_marks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.host.counting import CountingQemu
from farm.job.estimate.marks import BEGIN, COUNTS_FILE, END, MARK_SYSCALL, Marks


def fake_counting(bundle: Path, reserves: tuple[str, ...] = ("aarch64", "x86_64")) -> CountingQemu:
    return CountingQemu(
        bundle=bundle,
        qemu_version="1:10.0.2",
        source_sha256="a" * 64,
        plugin_sha256="b" * 64,
        build_seconds=1.0,
        loader="ld-linux-x86-64.so.2",
        reserves=reserves,
    )


def fake_marks(monkeypatch: pytest.MonkeyPatch, out: Path, per_run: dict[str, int]) -> None:
    """The job's marks answered as the plugin does at an end mark: ``per_run`` appended to ``out``/counts.jsonl."""

    def syscall(number: int, what: int, mark: int) -> int:
        assert number == MARK_SYSCALL and what in (BEGIN, END)
        if what == END:
            with (out / COUNTS_FILE).open("a") as f:
                f.write(json.dumps({"id": mark, "counts": per_run, "total": sum(per_run.values())}) + "\n")
        return -1

    def init(self: Marks, out: Path) -> None:
        self.path, self.next_id, self._syscall = out / COUNTS_FILE, 1, syscall  # type: ignore[assignment]

    monkeypatch.setattr(Marks, "__init__", init)
