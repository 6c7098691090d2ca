"""One Job followed from its creation to its deletion: started, fed, watched, its results collected."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.backend.engine import RUN_LABEL, LogLines, RunResult, RunSpec
from farm.backend.kubernetes.client import REQUEST_TIMEOUT, Clients, delete_job, plain
from farm.backend.kubernetes.manifests import RECEIVE_WAIT_S, START_WAIT_S
from farm.backend.kubernetes.transfer import collect_outputs, send_inputs
from farm.host.files import LineSink
from farm.job.pod.budget import TIMED_OUT

# How long a job may wait for a node (unschedulable) before it fails rather than wait for ever; image pulls are
# not counted (a GPU image takes minutes), only their failures (back-off, an invalid name).
SCHEDULE_WAIT_S = 300.0
# A watch-like poll: the pod's state is asked for every second.
_POLL_S = 1.0
# Container waiting reasons that will not resolve on their own.
_START_FAILURES = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(kw_only=True)
class _Ended:
    exit_code: int
    reason: str | None
    duration_s: float | None


@dataclass(kw_only=True)
class _PodState:
    name: str | None = None
    phase: str = "Pending"
    # Containers by name: "waiting" (with reason), "running", or "terminated" (with _Ended).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    ended: dict[str, _Ended] = field(default_factory=dict)
    unschedulable: str | None = None
    message: str | None = None


class JobRun:
    """One Job from creation to deletion."""

    def __init__(self, clients: Clients, namespace: str, name: str, spec: RunSpec, on_line: LineSink | None) -> None:
        self.clients = clients
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self.on_line = on_line
        self._log = LogLines(on_line)

    def run(self, manifests: Sequence[Mapping[str, Any]]) -> RunResult:
        started = time.monotonic()
        job, network = manifests[0], manifests[1]
        created = self.clients.batch.create_namespaced_job(self.namespace, dict(job), _request_timeout=REQUEST_TIMEOUT)
        try:
            uid = (plain(created).get("metadata") or {}).get("uid")
            policy = dict(network)
            if uid:
                policy["metadata"] = {
                    **policy["metadata"],
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": self.name,
                            "uid": uid,
                            "blockOwnerDeletion": False,
                        }
                    ],
                }
            self.clients.networking.create_namespaced_network_policy(
                self.namespace, policy, _request_timeout=REQUEST_TIMEOUT
            )
            return self._follow(started)
        finally:
            if not self.spec.keep:
                delete_job(self.clients, self.namespace, self.name)

    def _follow(self, started: float) -> RunResult:
        state = self._wait(lambda s: "receive" in s.running, started, "to start")
        if isinstance(state, RunResult):
            return state
        assert state.name is not None
        pod = state.name
        failure = send_inputs(self.clients, self.namespace, pod, self.spec)
        if failure:
            return RunResult.engine_failure(
                f"could not receive its inputs: {failure}", duration_s=time.monotonic() - started
            )
        state = self._wait(lambda s: "job" in s.running or "job" in s.ended, started, "to start its job")
        if isinstance(state, RunResult):
            return state
        reader = threading.Thread(target=self._read_logs, args=(pod,), daemon=True)
        reader.start()
        job_started = time.monotonic()
        backstop = self.spec.timeout_s + 60
        timed_out = False
        while True:
            state = self._state()
            if state.name is None:
                return RunResult.engine_failure(
                    "was removed from outside while it ran",
                    log_tail=self._tail(),
                    duration_s=time.monotonic() - job_started,
                )
            if "job" in state.ended or state.phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() - job_started > backstop:
                timed_out = True  # the budget wrapper did not stop it: the Job's deletion will
                break
            time.sleep(_POLL_S)
        reader.join(timeout=5)
        ended = state.ended.get("job")
        if "collect" in state.running:
            problem = collect_outputs(self.clients, self.namespace, pod, self.spec)
            if problem and self.on_line:
                self.on_line(f"farm: results could not be brought back: {problem}")
        if ended is None:
            if timed_out:
                return RunResult(
                    exit_code=-1,
                    log_tail=self._tail(),
                    oom_killed=False,
                    timed_out=True,
                    duration_s=time.monotonic() - job_started,
                )
            return RunResult.engine_failure(
                f"ended without a status ({state.message or state.phase})",
                log_tail=self._tail(),
                duration_s=time.monotonic() - job_started,
            )
        return RunResult(
            exit_code=ended.exit_code,
            log_tail=self._tail(),
            oom_killed=ended.reason == "OOMKilled",
            timed_out=timed_out or ended.exit_code == TIMED_OUT,
            duration_s=ended.duration_s if ended.duration_s is not None else time.monotonic() - job_started,
        )

    def _wait(self, ready: Any, started: float, what: str) -> _PodState | RunResult:
        """Poll the pod until ``ready(state)``, or a RunResult saying why it never will be."""
        unschedulable_since: float | None = None
        while True:
            state = self._state()
            if state.name is not None and ready(state):
                return state
            for container, (reason, message) in state.waiting.items():
                if reason in _START_FAILURES:
                    return RunResult.engine_failure(
                        f"could not be started: {container}: {reason}: {message}", duration_s=time.monotonic() - started
                    )
            for container, ended in state.ended.items():
                if container == "receive" and ended.exit_code != 0:
                    return RunResult.engine_failure(
                        f"could not receive its inputs (exit {ended.exit_code})", duration_s=time.monotonic() - started
                    )
            if state.phase in ("Failed", "Succeeded"):
                return RunResult.engine_failure(
                    f"ended before it began ({state.message or state.phase})", duration_s=time.monotonic() - started
                )
            if state.unschedulable:
                unschedulable_since = unschedulable_since or time.monotonic()
                if time.monotonic() - unschedulable_since > SCHEDULE_WAIT_S:
                    return RunResult.engine_failure(
                        f"found no node to run on in {SCHEDULE_WAIT_S:.0f} s: {state.unschedulable}",
                        duration_s=time.monotonic() - started,
                    )
            else:
                unschedulable_since = None
            if time.monotonic() - started > START_WAIT_S + RECEIVE_WAIT_S:
                return RunResult.engine_failure(
                    f"took too long {what} ({state.message or state.phase})", duration_s=time.monotonic() - started
                )
            time.sleep(_POLL_S)

    def _state(self) -> _PodState:
        listed = self.clients.core.list_namespaced_pod(
            self.namespace, label_selector=f"{RUN_LABEL}={self.name}", _request_timeout=REQUEST_TIMEOUT
        )
        pods = [plain(p) for p in getattr(listed, "items", None) or []]
        if not pods:
            return _PodState()
        return _pod_state(pods[0])

    def _read_logs(self, pod: str) -> None:
        try:
            response = self.clients.core.read_namespaced_pod_log(
                pod, self.namespace, container="job", follow=True, _preload_content=False
            )
        except Exception:  # the pod went away before its log could be opened
            return
        self._log.feed(response.stream(4096))

    def _tail(self) -> str:
        return self._log.tail()


def _pod_state(pod: Mapping[str, Any]) -> _PodState:
    """A pod object (serialized) as what JobRun waits on."""
    status = pod.get("status") or {}
    state = _PodState(
        name=(pod.get("metadata") or {}).get("name"),
        phase=str(status.get("phase") or "Pending"),
        message=status.get("message") or status.get("reason"),
    )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            state.unschedulable = str(condition.get("message") or "unschedulable")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        name = str(container.get("name"))
        current = container.get("state") or {}
        if current.get("waiting"):
            waiting = current["waiting"]
            state.waiting[name] = (str(waiting.get("reason") or ""), str(waiting.get("message") or ""))
        elif current.get("running"):
            state.running.add(name)
        elif current.get("terminated"):
            ended = current["terminated"]
            state.ended[name] = _Ended(
                exit_code=int(ended.get("exitCode", -1)),
                reason=ended.get("reason"),
                duration_s=_seconds_between(ended.get("startedAt"), ended.get("finishedAt")),
            )
    return state


def _seconds_between(start: Any, end: Any) -> float | None:
    from datetime import datetime

    def parse(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return None

    begun, done = parse(start), parse(end)
    return (done - begun).total_seconds() if begun and done else None
