"""The profile server: a process forked (never exec'd) at the start of the evaluate stage, which forks a fresh child
per variant to profile.

Fork, because the job's process is the target's: under a masked tier it carries the mask library (LD_PRELOAD) and
cpuid faulting, and under emulation it is the QEMU user-mode process the backend's entrypoint started; a child made by
exec of the interpreter would escape both (through the host's binfmt: another QEMU, another CPU model). The server is
forked before the dataset is loaded and before any session exists, so each child starts as a fresh process after its
imports: a small heap and no onnxruntime threads. On a timed target the job waits for each answer, so a profile
never runs while it times; on an emulated one (no times) the profiles run beside the job (farm.job.evaluate.profiled),
as many at once as the container has cores: each child translates onnxruntime's session creation anew under QEMU, and
one at a time they were the last 9 s of the bundled model's 21 s arm64 job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import select
import signal
import time
from collections import deque
from typing import Any, NoReturn

from farm.job import forked
from farm.job.profile import pages, wire
from farm.job.profile.child import Request, measure
from farm.job.result import error_text
from farm.job.session import preload_cuda
from farm.job.spec import SpecTarget

log = logging.getLogger("farm.job")
# How long one variant's child may take to create its session and run once; under QEMU both are far slower.
TIMEOUT_S = 300.0
EMULATED_TIMEOUT_S = 1800.0
PAST_DEADLINE = "the job reached the profile's share of its time budget before this variant's turn"
# How long the server has to end after the job closes its pipe, before it is killed.
CLOSE_S = 5.0


class ProfileFailed(RuntimeError):
    """This variant has no profile: its child failed, crashed or hung, or the server is gone."""


class ProfileServer:
    """The job's end of the server: requests answered in the order they were sent, each by a fresh child's figures;
    ``parallel`` children at most at a time."""

    def __init__(self, pid: int, requests: int, answers: int, timeout_s: float, parallel: int = 1) -> None:
        self.pid, self.requests, self.answers, self.timeout_s = pid, requests, answers, timeout_s
        self.parallel = parallel
        self.ended: str | None = None

    @classmethod
    def start(cls, target: SpecTarget, timeout_s: float | None = None, parallel: int = 1) -> ProfileServer:
        """Fork the server; call as early as the job can, before any session or dataset exists. ``timeout_s``: how
        long a variant's child may take (default: TIMEOUT_S, or EMULATED_TIMEOUT_S under emulation); ``parallel``:
        how many children may run at once (1 on a timed target, whose start-up times are timings)."""
        if timeout_s is None:
            timeout_s = EMULATED_TIMEOUT_S if target.emulated else TIMEOUT_S
        # Listed here, before the fork drops them (farm.job.profile.pages). Under QEMU the pagemap is the host's,
        # not the guest's; there the resident figure is only a bound anyway.
        # CUDA's libraries loaded once here, before the fork: what every process of the target loads, not a
        # variant's own cost (loading libraries is safe to fork; no CUDA context exists yet).
        preload_cuda(target.providers)
        resident = [] if target.emulated else pages.resident_file_pages()
        to_server, from_job = os.pipe()
        to_job, from_server = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (to_server, from_job, to_job, from_server):
                os.close(fd)
            raise
        if pid == 0:
            os.close(from_job)
            os.close(to_job)
            _serve(parent, _Serving(to_server, from_server, target, resident, timeout_s, parallel))
        os.close(to_server)
        os.close(from_server)
        return cls(pid, from_job, to_job, timeout_s, parallel)

    def ask(self, request: Request) -> dict[str, Any]:
        """The child's figures for ``request``; raises ProfileFailed (the server stays usable unless it is gone)."""
        self.submit(request)
        return self.answer()

    def submit(self, request: Request) -> None:
        """Send ``request`` without waiting: the server answers requests in the order they came (``answer``)."""
        if self.ended is not None:
            return
        try:
            wire.send(self.requests, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            self.ended = "the profile server ended"

    def answer(self, deadline: float | None = None) -> dict[str, Any]:
        """The figures for the oldest request not yet answered, waited for at most until ``deadline`` (the server
        answers each request by then, see _Serving._start) plus a margin; raises ProfileFailed."""
        if self.ended is not None:
            raise ProfileFailed(self.ended)
        wait_s = self.timeout_s if deadline is None else max(0.0, min(self.timeout_s, deadline - time.monotonic()))
        try:
            data = wire.receive(self.answers, wait_s + 60.0)
        except (OSError, TimeoutError):
            data = None
        if data is None:
            self.ended = "the profile server ended"
            self.close()
            raise ProfileFailed(self.ended)
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise ProfileFailed(f"the profile's answer is not JSON: {exc}") from exc
        if not isinstance(answer, dict):
            raise ProfileFailed(f"the profile's answer is not an object: {answer!r}")
        if "error" in answer:
            raise ProfileFailed(str(answer["error"]))
        return answer

    def close(self) -> None:
        """End the server and reap it (closing its pipe asks it to end; past CLOSE_S it is killed)."""
        for fd in (self.requests, self.answers):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.requests = self.answers = -1
        if self.pid <= 0:
            return
        pid, self.pid = self.pid, 0
        forked.reap(pid, CLOSE_S)


def _serve(parent: int, serving: _Serving) -> NoReturn:
    """The server's life: answer each request until the job closes the pipe, then exit (never return into the
    job's code: os._exit skips its finally blocks and atexit handlers, which are the job's)."""
    code = 0
    try:
        forked.die_with(parent)
        serving.run()
    except BaseException:  # whatever it was, the server only ends; the job sees the pipe close
        code = 1
    os._exit(code)


@dataclasses.dataclass(kw_only=True, slots=True)
class _Child:
    """One request's child, or (``pid`` 0) a request answered without one."""

    pid: int = 0
    read: int = -1
    deadline: float = 0.0
    timeout_s: float = 0.0
    answer: dict[str, Any] | None = None


class _Serving:
    """Requests answered in the order they came, by at most ``parallel`` children at a time."""

    def __init__(
        self,
        requests: int,
        answers: int,
        target: SpecTarget,
        resident: list[tuple[int, int]],
        timeout_s: float,
        parallel: int,
    ) -> None:
        self.requests, self.answers, self.target, self.resident = requests, answers, target, resident
        self.timeout_s, self.parallel = timeout_s, max(1, parallel)
        self.feed: Any = None
        self.queued: deque[Request] = deque()
        self.started: deque[_Child] = deque()  # in the requests' order, answered from the left

    def run(self) -> None:
        try:
            while True:
                self._start_queued()
                while self.started and self.started[0].answer is not None:
                    wire.send(self.answers, json.dumps(self.started.popleft().answer).encode())
                running = [child for child in self.started if child.answer is None]
                wait = min((child.deadline for child in running), default=None)
                ready = set(
                    select.select(
                        [self.requests, *(child.read for child in running)],
                        [],
                        [],
                        None if wait is None else max(0.0, wait - time.monotonic()),
                    )[0]
                )
                if self.requests in ready and not self._take_request():
                    return  # the job closed the pipe: it wants no more answers
                for child in running:
                    if child.read in ready or time.monotonic() >= child.deadline:
                        child.answer = self._finish(child)
        finally:
            for child in self.started:
                if child.answer is None:
                    os.kill(child.pid, signal.SIGKILL)
                    forked.reap(child.pid, CLOSE_S)

    def _take_request(self) -> bool:
        data = wire.receive(self.requests)
        if data is None:
            return False
        request = pickle.loads(data)
        # The feed comes with the first request only (Request.feed).
        self.feed = request.feed if request.feed is not None else self.feed
        self.queued.append(dataclasses.replace(request, feed=self.feed))
        return True

    def _start_queued(self) -> None:
        while self.queued and sum(1 for child in self.started if child.answer is None) < self.parallel:
            self.started.append(self._start(self.queued.popleft()))

    def _start(self, request: Request) -> _Child:
        """Fork the variant's child; it has ``timeout_s`` (and not past the request's deadline) to answer."""
        timeout_s = self.timeout_s
        if request.deadline is not None:
            timeout_s = min(timeout_s, request.deadline - time.monotonic())
            if timeout_s <= 0:
                return _Child(answer={"error": PAST_DEADLINE})
        read, write = os.pipe()
        # A child holds no other process's pipe: not the job's, not its running siblings'.
        inherited = (self.requests, self.answers, *(c.read for c in self.started if c.answer is None))
        server = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # e.g. the pids limit: this variant's profile is lost, the server goes on
            os.close(read)
            os.close(write)
            return _Child(answer={"error": f"the profile process could not start: {error_text(exc)}"})
        if pid == 0:
            os.close(read)
            _child(server, write, request, self.target, self.resident, inherited)
        os.close(write)
        return _Child(pid=pid, read=read, deadline=time.monotonic() + timeout_s, timeout_s=timeout_s)

    def _finish(self, child: _Child) -> dict[str, Any]:
        """The child's figures (or how it failed), the child reaped."""
        ended = None
        try:
            data = wire.receive(child.read, max(0.0, child.deadline - time.monotonic()))
        except TimeoutError:
            os.kill(child.pid, signal.SIGKILL)
            data = None
            ended = f"the profile process took longer than {child.timeout_s:.0f} s and was stopped"
        finally:
            os.close(child.read)
        status = forked.reap(child.pid, CLOSE_S)
        if data is not None:
            return dict(json.loads(data))
        return {"error": ended or forked.death(status, "the profile process")}


def _child(
    server: int,
    write: int,
    request: Request,
    target: SpecTarget,
    resident: list[tuple[int, int]],
    inherited: tuple[int, ...],
) -> NoReturn:
    code = 0
    try:
        for fd in inherited:
            os.close(fd)
        forked.die_with(server)
        # Its loss costs one profile, the job's the target: it holds a second copy of a variant beside the job's
        # sessions, so it is the first process the kernel kills when the container runs out of memory.
        forked.offer_to_oom_killer(1000)
        try:
            pages.touch(resident)  # start from the server's resident set (farm.job.profile.pages)
            answer = measure(request, target)
        except Exception as exc:  # the variant's own failure (its model, its session) is its answer
            answer = {"error": error_text(exc)}
        wire.send(write, json.dumps(answer).encode())
    except BaseException:  # the server reports a child that ends without an answer
        code = 1
    os._exit(code)
