"""Progress for long steps: a live rich display on a terminal, or plain lines with --quiet (for CI logs)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class Step(Protocol):
    def stage(self, text: str) -> None:
        """A new phase of this step, e.g. 'wheels', 'build', 'evaluate u8s8-qdq'."""

    def line(self, text: str) -> None:
        """A line of output from a tool the step runs; shown live, never printed in quiet mode."""


class Reporter(Protocol):
    def step(self, label: str) -> AbstractContextManager[Step]: ...

    def note(self, text: str) -> None: ...


class _RichStep:
    def __init__(self, progress: Progress, task: TaskID, label: str) -> None:
        self._progress, self._task, self._label = progress, task, label
        self._stage = ""

    def stage(self, text: str) -> None:
        self._stage = text
        self._progress.update(self._task, description=f"{self._label} [cyan]{text}[/]")

    def line(self, text: str) -> None:
        shown = text.strip().replace("[", "\\[")[:70]
        self._progress.update(self._task, description=f"{self._label} [cyan]{self._stage}[/] [dim]{shown}[/]")


class RichReporter:
    """One spinner line per step, with its stage and the latest tool output, on stderr."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @contextmanager
    def step(self, label: str) -> Iterator[Step]:
        task = self._progress.add_task(label, total=None)
        step = _RichStep(self._progress, task, label)
        try:
            yield step
        except BaseException:
            self._progress.update(task, description=f"{label} [red]failed[/]")
            self._progress.stop_task(task)
            raise
        self._progress.update(task, description=f"{label} [green]done[/]")
        self._progress.stop_task(task)

    def note(self, text: str) -> None:
        self._progress.console.print(text)


_say_lock = threading.Lock()


def _say(line: str) -> None:
    # Images build in several threads: one write per whole line, so their lines never run into each other.
    with _say_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _QuietStep:
    def __init__(self, label: str, say: Callable[[str], None]) -> None:
        self._label, self._say = label, say

    def stage(self, text: str) -> None:
        self._say(f"{self._label}: {text}")

    def line(self, text: str) -> None:
        pass


class QuietReporter:
    """A line when a step starts, changes stage and ends: what a CI log needs, nothing that redraws. ``say`` takes
    each line: stderr by default, or a caller's function (farm.api's ``progress=``)."""

    def __init__(self, say: Callable[[str], None] = _say) -> None:
        self._say = say

    def __enter__(self) -> QuietReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @contextmanager
    def step(self, label: str) -> Iterator[Step]:
        started = time.monotonic()
        try:
            yield _QuietStep(label, self._say)
        except BaseException:
            self._say(f"{label}: failed after {time.monotonic() - started:.1f} s")
            raise
        self._say(f"{label}: done in {time.monotonic() - started:.1f} s")

    def note(self, text: str) -> None:
        self._say(text)


def reporter(quiet: bool) -> RichReporter | QuietReporter:
    # A live display in a log file is noise, so anything that is not a terminal gets plain lines.
    if quiet or not sys.stderr.isatty():
        return QuietReporter()
    return RichReporter()
