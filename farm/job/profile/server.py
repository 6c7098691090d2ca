"""The profile server: a process forked (never exec'd) at the start of the evaluate stage, which forks a fresh child
per variant to profile.

Fork, because the job's process is the target's: under a masked tier it carries the mask library (LD_PRELOAD) and
cpuid faulting, and under emulation it is the QEMU user-mode process the backend's entrypoint started; a child made by
exec of the interpreter would escape both (through the host's binfmt: another QEMU, another CPU model). The server is
forked before the dataset is loaded and before any session exists, so each child starts as a fresh process after its
imports: a small heap and no onnxruntime threads. On a timed target the job waits for each answer, so a profile
never runs while it times; on an emulated one (no times) the profiles run beside the job (farm.job.evaluate.profiled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import signal
import time
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
    """The job's end of the server: one request at a time, each answered by a fresh child's figures."""

    def __init__(self, pid: int, requests: int, answers: int, timeout_s: float) -> None:
        self.pid, self.requests, self.answers, self.timeout_s = pid, requests, answers, timeout_s
        self.ended: str | None = None

    @classmethod
    def start(cls, target: SpecTarget, timeout_s: float | None = None) -> ProfileServer:
        """Fork the server; call as early as the job can, before any session or dataset exists. ``timeout_s``: how
        long a variant's child may take (default: TIMEOUT_S, or EMULATED_TIMEOUT_S under emulation)."""
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
            _serve(parent, to_server, from_server, target, resident, timeout_s)
        os.close(to_server)
        os.close(from_server)
        return cls(pid, from_job, to_job, timeout_s)

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
        answers each request by then, see _answer) plus a margin; raises ProfileFailed."""
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


def _serve(
    parent: int, requests: int, answers: int, target: SpecTarget, resident: list[tuple[int, int]], timeout_s: float
) -> NoReturn:
    """The server's life: answer each request until the job closes the pipe, then exit (never return into the
    job's code: os._exit skips its finally blocks and atexit handlers, which are the job's)."""
    code = 0
    try:
        forked.die_with(parent)
        feed = None
        while (data := wire.receive(requests)) is not None:
            request = pickle.loads(data)
            # The feed comes with the first request only (Request.feed).
            feed = request.feed if request.feed is not None else feed
            request = dataclasses.replace(request, feed=feed)
            answer = _answer(request, target, resident, timeout_s, (requests, answers))
            wire.send(answers, json.dumps(answer).encode())
    except BaseException:  # whatever it was, the server only ends; the job sees the pipe close
        code = 1
    os._exit(code)


def _answer(
    request: Request, target: SpecTarget, resident: list[tuple[int, int]], timeout_s: float, inherited: tuple[int, ...]
) -> dict[str, Any]:
    """Fork the variant's child, wait for its figures at most ``timeout_s`` (and not past the request's deadline),
    and reap it."""
    if request.deadline is not None:
        timeout_s = min(timeout_s, request.deadline - time.monotonic())
        if timeout_s <= 0:
            return {"error": PAST_DEADLINE}
    read, write = os.pipe()
    server = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:  # e.g. the pids limit: this variant's profile is lost, the server goes on
        os.close(read)
        os.close(write)
        return {"error": f"the profile process could not start: {error_text(exc)}"}
    if pid == 0:
        os.close(read)
        _child(server, write, request, target, resident, inherited)
    os.close(write)
    ended = None
    try:
        data = wire.receive(read, timeout_s)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        data, ended = None, f"the profile process took longer than {timeout_s:.0f} s and was stopped"
    finally:
        os.close(read)
    status = forked.reap(pid, CLOSE_S)
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
