"""Worker processes forked from the job, for work that times nothing: an emulated target's variants (accuracy only)
and the prepare stage's quantization. Each worker takes one task at a time and answers with its bytes; the parent
hands out the next task, in order, as a worker comes free, and hears each answer as it comes.

A worker that dies (QEMU segfaults happen; the OOM killer, to which a worker offers itself before the job) costs only
the task it was running: that task's answer is a ``Lost`` saying how it died, and a fresh worker takes its place while
tasks are left. Workers are forked, never exec'd (farm.job.forked says why), from the parent as it stands, so a
task is a closure over what the parent holds; the framing is the profile's (farm.job.profile.wire).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from farm.job import forked
from farm.job.profile import wire
from farm.job.result import error_text

log = logging.getLogger("farm.job")
# Killed before the job (0) and after a profile process (1000), which holds a second copy of one variant only.
OOM_SCORE = 500
# How long a worker has to end once its request pipe is closed, before it is killed.
CLOSE_S = 5.0
WORKER = "the worker process running it"
_OK, _RAISED = b"\x00", b"\x01"


@dataclass(frozen=True, kw_only=True, slots=True)
class Lost:
    """A task without an answer: its worker died, or the task raised (farm's bug, said rather than lost)."""

    why: str


Answer = bytes | Lost
Task = Callable[[], bytes]


@dataclass(kw_only=True, slots=True)
class _Worker:
    pid: int
    requests: int
    answers: int
    task: int | None = None


def run_pool(
    count: int,
    tasks: Sequence[Task],
    *,
    on_start: Callable[[int], None],
    on_done: Callable[[int, Answer], None],
    close_in_worker: Sequence[int] = (),
) -> None:
    """Run every task in at most ``count`` forked workers; in the parent, ``on_start(index)`` as a task is handed out
    (in order) and ``on_done(index, answer)`` as its answer comes. ``close_in_worker``: the parent's descriptors a
    worker must not hold (another process's pipes). Where no worker can be forked (the pids limit), the tasks left
    run in the parent, one after another."""
    pool = _Pool(tasks, close_in_worker)
    try:
        pool.run(count, on_start, on_done)
    finally:
        pool.close()


class _Pool:
    def __init__(self, tasks: Sequence[Task], close_in_worker: Sequence[int]) -> None:
        self.tasks, self.close_in_worker = tasks, tuple(close_in_worker)
        self.waiting = deque(range(len(tasks)))
        self.workers: list[_Worker] = []

    def run(self, count: int, on_start: Callable[[int], None], on_done: Callable[[int, Answer], None]) -> None:
        # What the parent no longer holds (a session it closed) is not copied into every worker.
        gc.collect()
        for _ in range(min(count, len(self.tasks))):
            if not self._fork():
                break
        while self.waiting or any(w.task is not None for w in self.workers):
            for worker in self.workers:
                if worker.task is None and self.waiting:
                    self._hand_out(worker, on_start, on_done)
            busy = [w for w in self.workers if w.task is not None]
            if not busy:
                if self.waiting and not self._fork():
                    self._in_parent(on_start, on_done)
                continue
            ready, _, _ = select.select([w.answers for w in busy], [], [])
            for worker in busy:
                if worker.answers in ready:
                    self._hear(worker, on_done)

    def _hand_out(
        self, worker: _Worker, on_start: Callable[[int], None], on_done: Callable[[int, Answer], None]
    ) -> None:
        index = self.waiting.popleft()
        worker.task = index
        on_start(index)
        try:
            wire.send(worker.requests, str(index).encode("ascii"))
        except OSError:  # it died while idle; the task's answer is its death, as if it had begun
            self._bury(worker, on_done)

    def _hear(self, worker: _Worker, on_done: Callable[[int, Answer], None]) -> None:
        index = worker.task
        assert index is not None
        try:
            data = wire.receive(worker.answers)
        except OSError:
            data = None
        if data is None:
            self._bury(worker, on_done)
            return
        worker.task = None
        if data[:1] == _OK:
            on_done(index, data[1:])
        else:
            on_done(index, Lost(why=data[1:].decode("utf-8", "replace")))

    def _bury(self, worker: _Worker, on_done: Callable[[int, Answer], None]) -> None:
        """A worker ended: its task is lost, said with how it died, and a fresh worker takes its place."""
        self.workers.remove(worker)
        _close(worker)
        why = forked.death(forked.reap(worker.pid, CLOSE_S), WORKER)
        log.info("pool: worker %d ended: %s", worker.pid, why)
        if worker.task is not None:
            on_done(worker.task, Lost(why=why))
        if self.waiting:
            self._fork()

    def _fork(self) -> bool:
        """Start a worker; False when the fork failed (e.g. the container's pids limit)."""
        # os.pipe() gives (read end, write end).
        worker_reads, parent_writes = os.pipe()
        parent_reads, worker_writes = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (worker_reads, parent_writes, parent_reads, worker_writes):
                os.close(fd)
            log.info("pool: no worker could start: %s", error_text(exc))
            return False
        if pid == 0:
            os.close(parent_writes)
            os.close(parent_reads)
            held = [fd for w in self.workers for fd in (w.requests, w.answers)]
            _serve(parent, worker_reads, worker_writes, self.tasks, (*held, *self.close_in_worker))
        os.close(worker_reads)
        os.close(worker_writes)
        self.workers.append(_Worker(pid=pid, requests=parent_writes, answers=parent_reads))
        return True

    def _in_parent(self, on_start: Callable[[int], None], on_done: Callable[[int, Answer], None]) -> None:
        log.info("pool: running the %d task(s) left in the job's own process", len(self.waiting))
        while self.waiting:
            index = self.waiting.popleft()
            on_start(index)
            on_done(index, self.tasks[index]())

    def close(self) -> None:
        """Close every request pipe (a worker's sign to end) and reap the workers."""
        workers, self.workers = self.workers, []
        for worker in workers:
            _close(worker)
        for worker in workers:
            forked.reap(worker.pid, CLOSE_S)


def _close(worker: _Worker) -> None:
    for fd in (worker.requests, worker.answers):
        with contextlib.suppress(OSError):
            os.close(fd)


def _serve(parent: int, requests: int, answers: int, tasks: Sequence[Task], inherited: Sequence[int]) -> NoReturn:
    """A worker's life: run each task it is handed until the parent closes the pipe, then exit (never return into
    the job's code: os._exit skips its finally blocks and atexit handlers, which are the job's)."""
    code, own = 0, None
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        forked.die_with(parent)
        forked.offer_to_oom_killer(OOM_SCORE)
        # A temporary folder of its own: onnxruntime names its profile files by the second, which workers share.
        own = tempfile.tempdir = tempfile.mkdtemp(prefix="farm-worker-")
        while (data := wire.receive(requests)) is not None:
            task = tasks[int(data)]
            try:
                answer = _OK + task()
            except Exception as exc:  # the task's own bug: its answer says so, the worker goes on
                answer = _RAISED + f"it raised {error_text(exc)}".encode()
            wire.send(answers, answer)
    except BaseException:  # whatever it was, the worker only ends; the parent sees the pipe close
        code = 1
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)
    os._exit(code)
