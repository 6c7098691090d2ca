"""What a container run is: its spec (image, command, mounts, limits), its result, and the labels farm's containers
carry. Every backend takes a RunSpec and gives a RunResult."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RUN_LABEL = "farm.run"
# Which job a container runs (prepare, evaluate, probe...), beside farm.target: `docker ps` and tests tell them apart.
STAGE_LABEL = "farm.stage"
LOG_TAIL_LINES = 40


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One hardened, networkless container run."""

    image: str
    command: Sequence[str]
    entrypoint: Sequence[str] | None = None
    mounts: Sequence[Mount] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    memory: str = "4g"
    pids_limit: int = 512
    cpuset: str | None = None
    gpus: int = 0
    timeout_s: float = 1800.0
    labels: Mapping[str, str] = field(default_factory=dict)
    keep: bool = False


@dataclass(frozen=True, kw_only=True)
class RunResult:
    exit_code: int
    log_tail: str
    oom_killed: bool
    timed_out: bool
    duration_s: float
    # How it thrashed at its memory limit, when farm stopped it for that (farm/backend/thrashing.py).
    thrashed: str | None = None
    # Set when the engine refused to start the container, or it vanished while it ran (removed from outside).
    engine_error: str | None = None

    @classmethod
    def engine_failure(cls, why: str, *, log_tail: str = "", duration_s: float = 0.0) -> RunResult:
        """A run that ended without an exit status of its own: it could not start, or it was removed."""
        return cls(
            exit_code=-1, log_tail=log_tail, oom_killed=False, timed_out=False, duration_s=duration_s, engine_error=why
        )

    @property
    def out_of_memory(self) -> bool:
        return self.oom_killed or self.thrashed is not None

    @property
    def failure(self) -> str | None:
        """Why the container failed, in words, or None when it exited 0."""
        if self.engine_error:
            return self.engine_error
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f} s and was stopped"
        if self.thrashed:
            return f"ran out of memory: {self.thrashed}"
        # A process of the container killed for memory while its main one went on to exit 0 (a job's profile
        # process, which offers itself first: farm.job.profile.server) is that process's loss, told by the job.
        if self.oom_killed and self.exit_code != 0:
            return f"ran out of memory (exit {self.exit_code}): the container hit its memory limit"
        if self.exit_code == 0:
            return None
        if self.exit_code > 128:
            number = self.exit_code - 128
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            if number == signal.SIGKILL:
                return f"was killed ({name}, exit {self.exit_code}) from outside"
            return f"crashed with {name} (exit {self.exit_code})"
        return f"exited with status {self.exit_code}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
