"""The evaluate stage's hook into the deployment profile (farm.job.profile): each variant's start-up and memory,
measured by the profile server's fresh child right after the variant's accuracy is known."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from farm.job import capacity
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.timed import measured_as
from farm.job.profile.answer import BadAnswer, to_profile
from farm.job.profile.child import Request
from farm.job.profile.server import ProfileFailed, ProfileServer
from farm.job.report import Profile
from farm.job.result import error_text
from farm.job.spec import Level, Spec

log = logging.getLogger("farm.job")
NO_PROFILE = "{name} has no deployment profile: {why}; its other figures stand"
NO_SERVER = "no variant has a deployment profile: the profile server could not start ({why})"


def start_server(spec: Spec, file: ResultFile) -> ProfileServer | None:
    """The profile server when the spec asks for a profile (None: it does not, or the fork failed, which is a
    warning, never the target's end)."""
    if spec.profile is None:
        return None
    try:
        # Under emulation nothing is timed, so profiles may run side by side (see farm.job.profile.server).
        parallel = capacity.usable_cores() if spec.target.emulated else 1
        return ProfileServer.start(spec.target, parallel=parallel)
    except Exception as exc:  # e.g. the container's pid limit: the profile is lost, never the target
        file.warn(NO_SERVER.format(why=error_text(exc)))
        return None


class Profiler:
    """Profiles each variant in the server's fresh child, on ``feed`` (the first sample's).

    On a timed target each profile runs while the job waits, since start-up times are timings and nothing may run
    beside them. An emulated target has no times, and its profile children (each translating onnxruntime's session
    creation anew under QEMU) run beside the job, as many at once as it has cores; ``collect`` puts their figures in."""

    def __init__(
        self, *, spec: Spec, server: ProfileServer | None, feed: Mapping[str, np.ndarray], file: ResultFile
    ) -> None:
        self.spec, self.server, self.feed, self.file = spec, server, feed, file
        self.sent_feed = False
        self.pending: list[str] = []
        budget = None if spec.profile is None else spec.profile.budget_s
        self.deadline = None if budget is None else file.started + budget

    def profile(self, name: str, path: Path, config: Mapping[str, str] | None, level: Level) -> Profile | None:
        """The variant's profile, created with the settings used for timing; None (and a warning) when its child
        failed, crashed or hung, or when no profile was asked for; None too under emulation, where ``collect``
        brings it later."""
        if self.server is None:
            return None
        spec = self.spec
        log.info("evaluate: profiling %s", name)
        feed = None if self.sent_feed else self.feed
        self.sent_feed = True
        request = Request(
            path=str(path),
            config=dict(config or {}),
            level=level,
            threads=spec.threads,
            feed=feed,
            deadline=self.deadline,
        )
        self.server.submit(request)
        if spec.target.emulated:
            self.pending.append(name)
            return None
        return self._answer(name)

    def collect(self) -> None:
        """Wait for the emulated target's profiles still to come and put each into its ok variant."""
        pending, self.pending = self.pending, []
        profiles = {name: self._answer(name) for name in pending}
        if not profiles:
            return
        variants = tuple(
            replace(v, profile=profiles[v.name]) if v.name in profiles and v.status == "ok" else v
            for v in self.file.result.variants
        )
        self.file.save(variants=variants)

    def _answer(self, name: str) -> Profile | None:
        assert self.server is not None
        spec = self.spec
        try:
            answer = self.server.answer(self.deadline)
            return to_profile(
                answer, emulated=spec.target.emulated, threads=spec.threads, timing=measured_as(spec.target)
            )
        except (ProfileFailed, BadAnswer) as exc:
            self.file.warn(NO_PROFILE.format(name=name, why=error_text(exc)))
            return None
