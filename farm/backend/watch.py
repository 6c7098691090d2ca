"""Following a running container: its output as lines (and a tail kept for failure reports), its memory counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from farm.backend.runspec import LOG_TAIL_LINES
from farm.backend.thrashing import ThrashWatch, sample_of
from farm.host.files import LineSink


class LogLines:
    """A job's output, arriving as byte chunks, into lines: each goes to the sink as it completes, and the last
    LOG_TAIL_LINES are kept for failure reports. Backends feed it from whatever streams their logs."""

    def __init__(self, sink: LineSink | None) -> None:
        self._sink = sink
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def feed(self, chunks: Iterable[bytes]) -> None:
        pending = b""
        try:
            for chunk in chunks:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._add(raw.decode("utf-8", "replace"))
            if pending:
                self._add(pending.decode("utf-8", "replace"))
        except Exception:  # the container (or pod) went away under us; the tail we have is what there is
            return

    def _add(self, line: str) -> None:
        with self._lock:
            self._lines = [*self._lines, line][-LOG_TAIL_LINES:]
        if self._sink:
            self._sink(line)

    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._lines)


class LogReader(threading.Thread):
    """Streams a container's output line by line to a sink, and keeps the tail for failure reports."""

    def __init__(self, container: Any, sink: LineSink | None) -> None:
        super().__init__(daemon=True)
        self._container = container
        self._lines = LogLines(sink)

    def run(self) -> None:
        self._lines.feed(self._container.logs(stream=True, follow=True))

    def tail(self) -> str:
        return self._lines.tail()


class MemoryWatch(threading.Thread):
    """Follows a container's memory counters (one sample a second, as the engine streams them) and sets
    ``thrashed`` once it thrashes at its limit, for the run loop to stop it (farm/backend/thrashing.py)."""

    def __init__(self, container: Any, started: float) -> None:
        super().__init__(daemon=True)
        self._container = container
        self._since = started
        self.thrashed: str | None = None

    def run(self) -> None:
        watch = ThrashWatch()
        try:
            for stats in self._container.client.api.stats(self._container.id, stream=True, decode=True):
                sample = sample_of(stats, time.monotonic() - self._since)
                if sample is not None and (found := watch.feed(sample)) is not None:
                    self.thrashed = found
                    return
        except Exception:  # the container ended or the engine went away: the run loop reports either
            return
